//! Everything the CLI prints: text tables, status and live displays, fit reports. Rendering
//! only: what is shown comes from the libraries.

pub mod fit;
pub mod status;
pub mod table;
