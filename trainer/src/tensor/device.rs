//! Where tensors live: the device a run uses (the first CUDA GPU with the `cuda` feature, else
//! the CPU) and the CPU runtime's thread pools and allocator, set up once at start.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};

/// Set when the CPU must take the composite-op path a GPU takes (see [`fused_kernels`]).
static COMPOSITE_OPS: AtomicBool = AtomicBool::new(false);

/// Whether the hand-written CPU kernels ([`crate::tensor::kernels`]) run on `x`: an f32 or
/// f64 tensor on the CPU. A GPU always takes candle's composite ops, and so do half-precision
/// tensors (a bf16 run, see [`crate::model::load::Precision`]); the CPU does too after
/// [`force_composite_ops`] (or with `PAIRWISE_COMPOSITE_OPS=1` in the environment), so the
/// GPU's code path can be checked against PyTorch on a machine without one.
pub fn fused_kernels(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && !COMPOSITE_OPS.load(Ordering::Relaxed)
}

/// Routes every later forward and backward pass through candle's composite ops.
pub fn force_composite_ops(on: bool) {
    COMPOSITE_OPS.store(on, Ordering::Relaxed);
}

/// The device training runs on: the first CUDA GPU with the `cuda` feature, else the CPU.
pub fn default_device() -> anyhow::Result<Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(Device::new_cuda(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

/// Sets up the CPU runtime for training; call it at the start of `main`.
///
/// * candle's elementwise thread pool gets one thread unless `CANDLE_NUM_THREADS` is set:
///   training, evaluation and scoring already run one batch shard per core (see
///   [`crate::train::run::step_gradients`]), and a second pool of spinning threads would only
///   compete with them.
/// * `RAYON_NUM_THREADS` is pinned to the available cores unless set: candle re-reads it on
///   every matmul and, when unset, counts the cores from `/proc/cpuinfo` each time.
/// * glibc malloc keeps freed memory instead of returning every large block to the kernel:
///   each training step allocates and frees hundreds of activation and gradient buffers, and
///   fresh pages cost a page fault and a kernel memset each.
///
/// # Safety
/// Sets environment variables: no other thread may exist yet (candle reads the variables
/// once, when its pools are first used).
pub unsafe fn configure_cpu_runtime() {
    // SAFETY (both blocks): the caller guarantees no other thread is running.
    if std::env::var_os("PAIRWISE_COMPOSITE_OPS").is_some_and(|v| v == "1") {
        force_composite_ops(true);
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        unsafe { std::env::set_var("RAYON_NUM_THREADS", cores.to_string()) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
