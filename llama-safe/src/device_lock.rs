//! One thread at a time on a device whose backend needs it.
//!
//! ggml-vulkan gives every context of a process the same device object and
//! its one queue; two contexts computing, loading or copying on it from two
//! threads at once have ended processes with SIGSEGV (llama.cpp issues 7575
//! and 11371: concurrent `vkQueueSubmit`; the fixes upstream narrowed it,
//! and it "still crashes occasionally"). So every call that can submit work
//! to a Vulkan device (a model's load and free, a context's creation, free,
//! decode, KV cache and state operations, a LoRA adapter's load) holds that
//! device's lock. Other backends (CPU, CUDA, Metal, RPC) keep a queue or
//! stream per context and take no lock. The cost to a single thread is one
//! uncontended mutex per call (47 ns, against 125 µs or more for a decode:
//! docs/SAFETY.md has the measurement); threads sharing a
//! Vulkan device take turns instead of running at once, as its one queue
//! would make them in any case.

use std::sync::{Mutex, MutexGuard};

/// Vulkan devices a lock is kept for (ggml-vulkan numbers them from 0).
const MAX_VULKAN: usize = 64;

static VULKAN: [Mutex<()>; MAX_VULKAN] = [const { Mutex::new(()) }; MAX_VULKAN];

/// The devices of a model whose work must be serialised: a set of Vulkan
/// device numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SerialDevices(u64);

impl SerialDevices {
    /// The Vulkan devices among `names` (`Vulkan0`, `Vulkan1`, ...).
    pub(crate) fn of_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> SerialDevices {
        let mut set = 0u64;
        for name in names {
            let index = name
                .as_ref()
                .strip_prefix("Vulkan")
                .and_then(|n| n.parse::<usize>().ok());
            // A device past the table shares the last lock: still serialised.
            if let Some(i) = index {
                set |= 1 << i.min(MAX_VULKAN - 1);
            }
        }
        SerialDevices(set)
    }

    /// The devices a model loaded with `devices` uses: those, or, when none
    /// are named, every device of the registry (llama.cpp's default).
    pub(crate) fn for_model(devices: &[String]) -> SerialDevices {
        if devices.is_empty() {
            SerialDevices::of_names(crate::backend::device_names())
        } else {
            SerialDevices::of_names(devices)
        }
    }

    /// Both sets (a projector's devices with its model's).
    #[cfg_attr(not(feature = "mtmd"), allow(dead_code))]
    pub(crate) fn union(self, other: SerialDevices) -> SerialDevices {
        SerialDevices(self.0 | other.0)
    }

    /// Takes the lock of every device in the set, in order (so two threads
    /// never wait on each other's); nothing when the set is empty.
    pub(crate) fn lock(self) -> DeviceGuard {
        if self.0 == 0 {
            return DeviceGuard(Vec::new());
        }
        DeviceGuard(
            (0..MAX_VULKAN)
                .filter(|i| self.0 & (1 << i) != 0)
                .map(|i| VULKAN[i].lock().unwrap_or_else(|e| e.into_inner()))
                .collect(),
        )
    }
}

/// Held while a device's work runs.
#[must_use = "the devices are locked only while the guard lives"]
pub(crate) struct DeviceGuard(#[allow(dead_code)] Vec<MutexGuard<'static, ()>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vulkan_devices_are_serialised() {
        assert_eq!(
            SerialDevices::of_names(["CPU", "CUDA0", "RPC0", "Metal"]),
            SerialDevices(0)
        );
        assert_eq!(
            SerialDevices::of_names(["Vulkan0", "Vulkan2", "CUDA1"]),
            SerialDevices(0b101)
        );
        assert_eq!(
            SerialDevices::of_names(["Vulkan999"]),
            SerialDevices(1 << 63)
        );
        assert!(SerialDevices(0).lock().0.is_empty());
        assert_eq!(SerialDevices(0b101).lock().0.len(), 2);
    }

    /// The cost to one thread: an uncontended lock and unlock.
    #[test]
    fn an_uncontended_lock_costs_nanoseconds() {
        let set = SerialDevices::of_names(["Vulkan1"]);
        let n = 100_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            drop(std::hint::black_box(set).lock());
        }
        let each = start.elapsed() / n;
        eprintln!("device lock: {n} uncontended lock/unlock pairs, {each:?} each");
        assert!(each < std::time::Duration::from_micros(20), "{each:?}");
    }
}
