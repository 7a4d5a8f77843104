//! Backend-specific kernels behind one seam. The models call one function per op
//! ([`cpu::conv2d`], [`cpu::group_norm`], [`cpu::silu`]) where the CPU kernel applies and burn's
//! generic tensor ops everywhere else (WebGPU, wgpu); the model structs stay diffusers mirrors.

pub mod cpu;
