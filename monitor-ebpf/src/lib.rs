//! Empty library target: lets `monitor` name this crate as a build-dependency, so cargo
//! rebuilds the daemon when the kernel code changes (the aya-template arrangement).
#![no_std]
