//! Per-thread byte buffers for the socket calls of the WebSocket path.
//!
//! A read on the direct path decodes what it got before it returns, and a write hands its
//! bytes to the kernel before it returns (what the socket did not take is copied out), so one
//! buffer per thread serves every connection. Arrays on the stack did the same job but were
//! zeroed on every call: 8 KiB per read, 4 KiB per single-frame write. And a batch of frames
//! was encoded into a fresh `Vec` that grew by doubling: about ten allocator calls for a
//! 1 KiB write. A buffer that grew past [`KEEP`] is given back after the call, so one large
//! batch does not pin its memory in a thread.

use std::cell::RefCell;

/// Largest buffer a thread keeps between calls.
pub const KEEP: usize = 64 * 1024;

thread_local! {
    static READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's read buffer, `len` bytes long. Its contents are whatever the
/// last read left: `f` must only look at what it reads into it.
pub fn with_read<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() != len {
                buf.resize(len, 0);
            }
            let result = f(&mut buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            result
        }
        // Only a nested call could find it taken; it gets a buffer of its own.
        Err(_) => f(&mut vec![0; len]),
    })
}

/// Runs `f` with this thread's write buffer, empty.
pub fn with_write<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    WRITE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let result = f(&mut buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            result
        }
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_buffer_starts_empty_and_keeps_its_storage() {
        let first = with_write(|buf| {
            assert!(buf.is_empty());
            buf.extend_from_slice(b"frame");
            buf.as_ptr()
        });
        let second = with_write(|buf| {
            assert!(buf.is_empty(), "cleared between calls");
            buf.push(1);
            buf.as_ptr()
        });
        assert_eq!(first, second, "no new allocation for the second write");
    }

    #[test]
    fn a_grown_buffer_is_given_back_and_nested_calls_get_their_own() {
        with_write(|buf| buf.resize(KEEP + 1, 7));
        WRITE.with(|cell| assert_eq!(cell.borrow().capacity(), 0));
        with_write(|outer| {
            outer.push(1);
            with_write(|inner| {
                assert!(inner.is_empty());
                inner.push(2);
            });
            assert_eq!(outer, &[1]);
        });
        with_read(16, |buf| {
            assert_eq!(buf.len(), 16);
            buf[0] = 9;
            with_read(8, |inner| assert_eq!(inner.len(), 8));
        });
        with_read(4, |buf| assert_eq!(buf.len(), 4, "sized per call"));
    }
}
