//! Where a run trains, parsed once from the spec (`runtime.device`) and from the wire, and the
//! peak FLOP/s of known accelerators, for MFU.

use crate::spec::Precision;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A training device: `cpu`, or CUDA device `N` (`cuda` is `cuda:0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device by index.
    Cuda(u32),
}

impl Device {
    /// True for a CUDA device.
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("expected cpu, cuda or cuda:N, got `{other}`")),
        }
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Device;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("cpu, cuda or cuda:N")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Device, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

/// Peak dense FLOP/s of known NVIDIA accelerators, by a name as the driver reports it
/// (`NVIDIA H100 80GB HBM3`, `NVIDIA A100-SXM4-80GB`, ...), for `precision`: bf16 tensor-core
/// throughput for bf16 mixed precision, plain fp32 (libtorch does not use TF32 for fp32
/// matmuls by default) for fp32. Figures are NVIDIA's datasheet numbers without sparsity.
/// `None` for an unknown device: pass the peak explicitly (`--peak-flops`).
pub fn peak_flops(device_name: &str, precision: Precision) -> Option<f64> {
    let name = device_name.to_ascii_uppercase();
    let has = |t: &str| name.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == t);
    // (bf16, fp32), most specific names first.
    let (bf16, fp32) = if has("H200") || has("GH200") {
        (989.4e12, 66.9e12)
    } else if has("H100") && has("PCIE") {
        (756.5e12, 51.2e12)
    } else if has("H100") && has("NVL") {
        (835.5e12, 60.0e12)
    } else if has("H100") {
        (989.4e12, 66.9e12)
    } else if has("A100") {
        (312.0e12, 19.5e12)
    } else if has("L40S") {
        (362.1e12, 91.6e12)
    } else if has("L40") {
        (181.0e12, 90.5e12)
    } else if has("L4") {
        (121.0e12, 30.3e12)
    } else if has("A10") {
        (125.0e12, 31.2e12)
    } else {
        return None;
    };
    Some(match precision {
        Precision::Bf16 => bf16,
        Precision::Fp32 => fp32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_once_and_round_trip() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!(Device::Cuda(3).to_string().parse::<Device>().unwrap(), Device::Cuda(3));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            assert!(bad.parse::<Device>().unwrap_err().contains("expected cpu, cuda or cuda:N"), "{bad}");
        }
        assert_eq!(serde_json::to_string(&Device::Cuda(1)).unwrap(), "\"cuda:1\"");
        assert_eq!(serde_json::from_str::<Device>("\"cuda\"").unwrap(), Device::Cuda(0));
    }

    #[test]
    fn peak_flops_by_device_name() {
        let bf16 = |n| peak_flops(n, Precision::Bf16);
        assert_eq!(bf16("NVIDIA H200"), Some(989.4e12));
        assert_eq!(bf16("NVIDIA H100 80GB HBM3"), Some(989.4e12));
        assert_eq!(bf16("NVIDIA H100 PCIe"), Some(756.5e12));
        assert_eq!(bf16("NVIDIA H100 NVL"), Some(835.5e12));
        assert_eq!(bf16("NVIDIA A100-SXM4-80GB"), Some(312e12));
        assert_eq!(bf16("NVIDIA A100 80GB PCIe"), Some(312e12));
        assert_eq!(bf16("NVIDIA L4"), Some(121e12));
        assert_eq!(bf16("NVIDIA L40S"), Some(362.1e12));
        assert_eq!(bf16("NVIDIA A10"), Some(125e12));
        assert_eq!(peak_flops("NVIDIA A100-SXM4-40GB", Precision::Fp32), Some(19.5e12));
        assert_eq!(bf16("Tesla T4"), None);
        assert_eq!(bf16("cpu"), None);
    }
}
