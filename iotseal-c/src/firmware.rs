//! What a `no_std` build (without the `std` feature: firmware) needs from its C environment:
//! a panic handler that calls C `abort()` (build with the `firmware` profile, `panic =
//! "abort"`: nothing unwinds, no panic is caught), and a global allocator over C `malloc`,
//! `realloc` and `free`.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::panic::PanicInfo;

unsafe extern "C" {
    /// C `abort()`: ends the program at once, never returns.
    safe fn abort() -> !;
    fn malloc(size: usize) -> *mut c_void;
    fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

/// A bug in the library: the firmware build has no unwinding and no message; it aborts.
#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    abort()
}

/// The personality routine of unwinding. The standard distribution's precompiled `alloc` was
/// built with `panic = "unwind"` and names it; in this build nothing unwinds (`panic =
/// "abort"`, and C does not unwind through the library), so it is never called: if it were,
/// it would abort.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() -> ! {
    abort()
}

/// The alignment every block from `malloc` has: C guarantees alignment for every fundamental
/// type, and Rust's `u64`, `f64` and `usize` have the alignment of the C ABI's `long long`,
/// `double` and `size_t` on every target. (glibc gives 16 on 64-bit targets; 8 is assumed.)
const MALLOC_ALIGN: usize = {
    let a = align_of::<u64>();
    let b = align_of::<f64>();
    let c = align_of::<usize>();
    let ab = if a > b { a } else { b };
    if ab > c { ab } else { c }
};

// An over-aligned block keeps malloc's pointer in the `usize` below the aligned address: the
// gap is at least MALLOC_ALIGN bytes, which must hold it.
const _: () = assert!(MALLOC_ALIGN >= size_of::<usize>());

/// The allocator over C `malloc`. Blocks aligned more strictly than `malloc` guarantees are
/// allocated `align` bytes larger and aligned by hand, with `malloc`'s pointer stored just
/// below the aligned address for `free`.
struct CAllocator;

#[global_allocator]
static ALLOCATOR: CAllocator = CAllocator;

impl CAllocator {
    /// The over-aligned case of `alloc`.
    fn alloc_aligned(layout: Layout) -> *mut u8 {
        let Some(total) = layout.size().checked_add(layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: malloc may be called with any size; it returns NULL or a block of `total`
        // bytes aligned to MALLOC_ALIGN.
        let raw = unsafe { malloc(total) }.cast::<u8>();
        if raw.is_null() {
            return raw;
        }
        // Between MALLOC_ALIGN and `align` bytes up (both powers of two, align larger), so
        // the aligned block of `size` bytes ends within the `total` bytes.
        let offset = layout.align() - (raw.addr() & (layout.align() - 1));
        let aligned = raw.wrapping_add(offset);
        let slot = aligned.wrapping_sub(size_of::<usize>()).cast::<*mut u8>();
        // SAFETY: `slot` is inside the block (offset ≥ MALLOC_ALIGN ≥ size_of::<usize>()),
        // valid for writes; it may be misaligned for a pointer, hence write_unaligned.
        unsafe { slot.write_unaligned(raw) };
        aligned
    }
}

// SAFETY: `alloc` returns NULL or a block of at least `layout.size()` bytes aligned to
// `layout.align()` (malloc's alignment, or aligned by hand); `dealloc` and `realloc` take only
// such blocks and free them the way they were made (the alignment of the layout tells which).
unsafe impl GlobalAlloc for CAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: malloc may be called with any size (a layout's size is non-zero here).
            unsafe { malloc(layout.size()) }.cast()
        } else {
            Self::alloc_aligned(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let raw = if layout.align() <= MALLOC_ALIGN {
            ptr
        } else {
            let slot = ptr.wrapping_sub(size_of::<usize>()).cast::<*mut u8>();
            // SAFETY: an over-aligned block from `alloc_aligned` (the caller passes the layout
            // it was allocated with), which stored malloc's pointer there.
            unsafe { slot.read_unaligned() }
        };
        // SAFETY: a pointer malloc or realloc returned, freed once (GlobalAlloc's contract).
        unsafe { free(raw.cast()) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: `ptr` came from malloc or realloc (this alignment never goes through
            // `alloc_aligned`); realloc keeps MALLOC_ALIGN and the first bytes.
            unsafe { realloc(ptr.cast(), new_size) }.cast()
        } else {
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return core::ptr::null_mut();
            };
            let new = Self::alloc_aligned(new_layout);
            if !new.is_null() {
                // SAFETY: both blocks are valid for the smaller size and distinct.
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                }
                // SAFETY: `ptr` was allocated with `layout` (GlobalAlloc's contract).
                unsafe { self.dealloc(ptr, layout) };
            }
            new
        }
    }
}
