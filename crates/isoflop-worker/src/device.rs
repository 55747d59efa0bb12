//! The device a worker trains on: `isoflop worker --check-device`, and the accelerator's name
//! and peak FLOP/s for MFU.

use isoflop_core::{Device, Precision};
use std::path::PathBuf;

/// What `isoflop worker --check-device` found.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    /// The libtorch library this process loaded, and its version (from the PyTorch wheel).
    pub libtorch: Option<(PathBuf, Option<String>)>,
    /// The libtorch directory the binary was built against.
    pub built_against: Option<&'static str>,
    pub cuda_linked: bool,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    /// The device checked and its accelerator name, when known.
    pub device: Device,
    pub device_name: Option<String>,
    /// The result of a 2x2 matmul on the device.
    pub matmul: Vec<f32>,
}

/// Why the device check failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {device} requested but CUDA is not available (libtorch_cuda loaded: {cuda_linked})")]
    NoCuda { device: Device, cuda_linked: bool },
    #[error("device {device} requested but only {count} CUDA device(s) are visible")]
    NoSuchDevice { device: Device, count: i64 },
    #[error("{what} on {device}: {source}")]
    Torch { what: &'static str, device: Device, source: tch::TchError },
    #[error("matmul on {device} gave {got:?}, expected {want:?}")]
    WrongResult { device: Device, got: Vec<f32>, want: Vec<f32> },
}

/// The libtorch library this process has loaded (from `/proc/self/maps`), if any.
fn loaded_libtorch() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libtorch_cpu.so")).map(PathBuf::from)
}

/// libtorch's version from the `torch/version.py` beside its `lib/` directory (PyTorch wheels).
fn libtorch_version(lib: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(lib.parent()?.parent()?.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split('=').nth(1)?.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// Checks the device the worker would train on (`requested`, default: CUDA when available)
/// with a small matmul. `built_against` is the libtorch directory recorded at build time.
pub fn check(requested: Option<Device>, built_against: Option<&'static str>) -> Result<DeviceReport, DeviceError> {
    // Touch libtorch so that it (and its CUDA library, when linked) is loaded.
    let cuda_available = tch::Cuda::is_available();
    let cuda_devices = tch::Cuda::device_count();
    let cudnn_available = tch::Cuda::cudnn_is_available();
    let cuda_linked = std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtorch_cuda.so"));
    let device = requested.unwrap_or(if cuda_available { Device::Cuda(0) } else { Device::Cpu });
    if let Device::Cuda(i) = device {
        if !cuda_available {
            return Err(DeviceError::NoCuda { device, cuda_linked });
        }
        if i64::from(i) >= cuda_devices {
            return Err(DeviceError::NoSuchDevice { device, count: cuda_devices });
        }
    }
    let torch = |what, source| DeviceError::Torch { what, device, source };
    let a = tch::Tensor::f_from_slice(&[1f32, 2., 3., 4.])
        .and_then(|t| t.f_reshape([2, 2]))
        .and_then(|t| t.f_to_device(isoflop_train::tch_device(device)))
        .map_err(|e| torch("copying a tensor", e))?;
    let matmul: Vec<f32> = a
        .f_matmul(&a)
        .and_then(|p| p.f_to_device(tch::Device::Cpu))
        .and_then(|p| (0..4).map(|i| p.f_double_value(&[i / 2, i % 2]).map(|v| v as f32)).collect())
        .map_err(|e| torch("a matmul", e))?;
    let want = vec![7f32, 10., 15., 22.];
    if matmul != want {
        return Err(DeviceError::WrongResult { device, got: matmul, want });
    }
    Ok(DeviceReport {
        libtorch: loaded_libtorch().map(|l| {
            let v = libtorch_version(&l);
            (l, v)
        }),
        built_against,
        cuda_linked,
        cuda_available,
        cuda_devices,
        cudnn_available,
        device,
        device_name: device_name(device),
        matmul,
    })
}

/// The accelerator's name as the NVIDIA driver reports it (`NVIDIA H200`), for CUDA device
/// `N` of this process (after `CUDA_VISIBLE_DEVICES`); `None` on the CPU or without the
/// driver's `/proc` entries.
pub fn device_name(device: Device) -> Option<String> {
    let Device::Cuda(i) = device else { return None };
    // The driver lists GPUs by PCI bus id, which is CUDA's order under
    // CUDA_DEVICE_ORDER=PCI_BUS_ID and on nodes of one GPU model either way.
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    let physical = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) if !v.trim().is_empty() => v.split(',').nth(i as usize)?.trim().parse::<usize>().ok()?,
        _ => i as usize,
    };
    let info = std::fs::read_to_string(dirs.get(physical)?.join("information")).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Model:")).map(|m| m.trim().to_string())
}

/// The peak FLOP/s of the device for MFU, by its name ([`isoflop_core::device::peak_flops`]).
pub fn peak_flops_of(device: Device, precision: Precision) -> Option<f64> {
    isoflop_core::device::peak_flops(&device_name(device)?, precision)
}
