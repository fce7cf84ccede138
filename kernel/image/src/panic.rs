//! A panic is a bug: report where, and end the run as failed.
use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let cpu = crate::arch::cpu_index();
    match info.location() {
        Some(l) => crate::console::print_crash(format_args!(
            "\n*** PANIC on cpu {cpu} at {}:{}: {}\n",
            l.file(),
            l.line(),
            info.message()
        )),
        None => crate::console::print_crash(format_args!(
            "\n*** PANIC on cpu {cpu}: {}\n",
            info.message()
        )),
    }
    crate::console::bail_out(format_args!("panic on cpu {cpu}: {}", info.message()))
}
