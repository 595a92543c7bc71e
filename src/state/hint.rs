//! Hints to the processor: they change nothing the program sees, only
//! when memory it will read arrives in the CPU cache.

/// Asks the processor to bring the `lines` cache lines from `p` on into its
/// cache: a hint, which reads nothing the program sees.
#[inline(always)]
pub fn prefetch(p: *const u8, lines: usize) {
    for line in 0..lines {
        let at = p.wrapping_add(line * 64);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults, whatever the address, and
        // changes nothing the program can observe.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }
}
