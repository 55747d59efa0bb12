//! The tokenizers isoflop knows by name. Parsed once (spec, manifest, CLI) into
//! [`Tokenizer`]; its name is what specs, manifests and run identities spell.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A tokenizer by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// Bytes 0-255 plus three specials (259 ids; end of text 256).
    Byte,
    /// GPT-2's BPE (`r50k_base`, 50,257 ids).
    Gpt2,
    /// Llama 3's tokenizer (128,256 ids): known for planning external corpora only; isoflop
    /// does not ship it.
    Llama3,
}

impl Tokenizer {
    /// Every tokenizer, in the order error messages list them.
    pub const ALL: [Tokenizer; 3] = [Tokenizer::Byte, Tokenizer::Gpt2, Tokenizer::Llama3];

    /// The name specs and manifests use.
    pub fn as_str(self) -> &'static str {
        match self {
            Tokenizer::Byte => "byte",
            Tokenizer::Gpt2 => "gpt2",
            Tokenizer::Llama3 => "llama3",
        }
    }

    /// Its vocabulary size (the model's default `vocab_size`).
    pub fn vocab_size(self) -> u64 {
        match self {
            Tokenizer::Byte => 259,
            Tokenizer::Gpt2 => 50_257,
            Tokenizer::Llama3 => 128_256,
        }
    }
}

impl fmt::Display for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tokenizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Tokenizer::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown tokenizer `{s}`; expected byte, gpt2 or llama3"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_identity_strings() {
        for t in Tokenizer::ALL {
            assert_eq!(t.as_str().parse::<Tokenizer>().unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
        assert_eq!(Tokenizer::Byte.vocab_size(), 259);
        assert!("llama".parse::<Tokenizer>().unwrap_err().contains("byte, gpt2 or llama3"));
    }
}
