//! The few devices the Linux guest needs: a UART, a CMOS clock and an
//! i8042 whose reset ends the run. The tiny guest uses plain ports instead
//! (see `stacklab_abi`).

pub mod cmos;
pub mod i8042;
pub mod serial;
