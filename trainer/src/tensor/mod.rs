//! The bottom layer: tensors and what is done to them below any notion of a model. Custom
//! candle ops with hand-written backward passes ([`ops`]) over CPU kernels ([`kernels`]),
//! in-place access to CPU buffers ([`buffer`]), llama.cpp-block weights for decoding ([`packed`]),
//! safetensors files ([`io`]) and the device and CPU runtime setup ([`device`]).

pub mod buffer;
pub mod device;
pub mod io;
pub mod kernels;
pub mod ops;
pub mod packed;
