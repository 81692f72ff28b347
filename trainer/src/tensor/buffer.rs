//! In-place access to the f32 buffers of CPU tensors: slices of a storage, mutation inside a
//! no-op in-place op (the only way candle lends a storage mutably), and gradient accumulation
//! into an existing buffer. The optimizer and the gradient sink of [`crate::tensor::ops`] use them.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Storage, Tensor};

/// Contiguous f32 slices of a CPU tensor's storage.
pub fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("expected a contiguous f32 tensor"),
    }
}

/// Runs `f` on the buffer of a contiguous f32 CPU tensor, in place (candle hands out a
/// storage mutably only inside an in-place op).
pub fn with_f32_mut(t: &Tensor, f: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<()> {
    struct OnBuffer<F>(RefCell<Option<F>>);
    impl<F: FnOnce(&mut [f32]) -> Result<()>> InplaceOp1 for OnBuffer<F> {
        fn name(&self) -> &'static str {
            "in-place-f32"
        }

        fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
            let f = self.0.borrow_mut().take().expect("an in-place op runs once");
            match (storage, layout.contiguous_offsets()) {
                (CpuStorage::F32(v), Some((start, end))) => f(&mut v[start..end]),
                _ => candle_core::bail!("expected a contiguous f32 tensor"),
            }
        }
    }
    t.inplace_op1(&OnBuffer(RefCell::new(Some(f))))
}

/// `acc + g`, added into `acc`'s own buffer on the CPU (no new allocation). `acc` must own its
/// storage: gradients read from a candle gradient store do (every entry is the fresh result
/// of an operation).
pub fn accumulate(acc: Tensor, g: &Tensor) -> Result<Tensor> {
    if acc.device().is_cpu() && acc.dtype() == DType::F32 && acc.is_contiguous() && acc.shape() == g.shape() {
        let g = g.contiguous()?;
        let (g_storage, g_layout) = g.storage_and_layout();
        if let Storage::Cpu(g_cpu) = &*g_storage {
            let g = f32_slice(g_cpu, g_layout)?;
            with_f32_mut(&acc, |a| {
                a.iter_mut().zip(g).for_each(|(a, g)| *a += g);
                Ok(())
            })?;
            return Ok(acc);
        }
    }
    acc + g
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn accumulate_adds_in_place() -> Result<()> {
        let acc = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu)?;
        let sum = accumulate(acc, &Tensor::new(&[0.5f32, -2.0, 1.0], &Device::Cpu)?)?;
        assert_eq!(sum.to_vec1::<f32>()?, vec![1.5, 0.0, 4.0]);
        Ok(())
    }
}
