//! The binary's side: flags mapped onto the library's configs, and what is printed.

pub mod demo;
pub mod report;
pub mod train;
