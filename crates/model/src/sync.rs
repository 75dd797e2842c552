//! Locks shared by every crate.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, also when a thread panicked while holding it. Isthmus only shares state
/// that each update leaves whole (a map entry replaced, a counter added to), so a
/// poisoned lock still guards consistent data; serving it beats taking every later
/// caller down with the one that panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
