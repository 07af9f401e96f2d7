//! Process-wide llama.cpp initialisation and the ggml backend devices.

use crate::error::{Error, Result};
use std::ffi::CStr;
use std::sync::Mutex;

/// Live [`LlamaBackend`] handles in this process.
static HANDLES: Mutex<usize> = Mutex::new(0);

/// The options of the first initialisation in this process: ggml's device
/// registry is built once and keeps them.
static FIRST: std::sync::OnceLock<BackendOptions> = std::sync::OnceLock::new();

/// Options of the process-wide backend, fixed by the first
/// [`LlamaBackend::init_with`] (or [`LlamaBackend::init`], which takes the
/// defaults): ggml builds its device registry once per process.
///
/// ```
/// let options = llama_safe::BackendOptions::default().with_software_devices(true);
/// assert!(options.software_devices());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "builders return a new value: use it"]
pub struct BackendOptions {
    software_devices: bool,
}

impl BackendOptions {
    /// Also offer Vulkan's software devices (Mesa's lavapipe, SwiftShader),
    /// which ggml-vulkan skips by default, as `Vulkan0`, `Vulkan1`, ... in
    /// the Vulkan loader's order, so that `--device Vulkan0` can name one
    /// without setting `GGML_VK_VISIBLE_DEVICES`. Every Vulkan device is
    /// then visible, so on a machine with a GPU too, name the devices a
    /// model should use ([`with_devices`](crate::LlamaModelParams::with_devices)).
    /// A `GGML_VK_VISIBLE_DEVICES` already set wins; without the `vulkan`
    /// feature this changes nothing.
    pub fn with_software_devices(mut self, enabled: bool) -> Self {
        self.software_devices = enabled;
        self
    }

    /// Whether software devices are asked for.
    pub fn software_devices(&self) -> bool {
        self.software_devices
    }
}

/// Before ggml's registry exists: make every Vulkan device visible to
/// ggml-vulkan when software devices are asked for.
fn prepare_registry(options: &BackendOptions) {
    const VISIBLE: &str = "GGML_VK_VISIBLE_DEVICES";
    if !options.software_devices || std::env::var_os(VISIBLE).is_some() {
        return;
    }
    // Every device, whatever its type: only the count is needed.
    // SAFETY: with a capacity of 0 the shim writes nothing through the
    // (NULL) pointer; it only uses the Vulkan loader's C API (no exceptions).
    let count = unsafe { llama_safe_sys::llama_sys_vk_physical_devices(std::ptr::null_mut(), 0) };
    if count <= 0 {
        return;
    }
    let list: Vec<String> = (0..count).map(|i| i.to_string()).collect();
    // ggml-vulkan reads this once, when the registry is built just after;
    // it is set under the handle lock, before any llama.cpp call of this
    // process (FIRST is unset).
    std::env::set_var(VISIBLE, list.join(","));
}

/// A handle on llama.cpp's process-wide backend state.
///
/// The first handle initialises llama.cpp (and routes its log to the `log`
/// crate); more handles are cheap and harmless; the last one dropped frees
/// it. Models keep a handle, so the backend outlives them.
///
/// ```
/// let backend = llama_safe::LlamaBackend::init();
/// assert!(backend.devices().iter().any(|d| d.kind == llama_safe::DeviceKind::Cpu));
/// ```
#[derive(Debug)]
#[must_use = "a handle: keep it for as long as it is needed"]
pub struct LlamaBackend {
    _private: (),
}

impl LlamaBackend {
    /// Initialises llama.cpp if no handle is alive, and returns a handle.
    /// The first initialisation in the process fixes the
    /// [`BackendOptions`]; this one takes whatever they are.
    pub fn init() -> LlamaBackend {
        let mut handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
        if FIRST.get().is_none() {
            let _ = FIRST.set(BackendOptions::default());
        }
        Self::init_locked(&mut handles)
    }

    /// [`init`](Self::init) with `options`, which only the process's first
    /// initialisation can set: later, options other than the first ones are
    /// [`Error::InvalidParameter`].
    ///
    /// ```
    /// use llama_safe::{BackendOptions, LlamaBackend};
    /// let backend = LlamaBackend::init_with(BackendOptions::default())?;
    /// // The registry is built: other options can no longer apply.
    /// let late = LlamaBackend::init_with(BackendOptions::default().with_software_devices(true));
    /// assert!(late.is_err());
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn init_with(options: BackendOptions) -> Result<LlamaBackend> {
        let mut handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
        match FIRST.get() {
            None => {
                prepare_registry(&options);
                let _ = FIRST.set(options);
            }
            Some(first) if *first == options => {}
            Some(first) => {
                return Err(Error::InvalidParameter {
                    name: "backend options",
                    reason: format!(
                        "{options:?} asked after llama.cpp was first set up in this process with \
                         {first:?}: ggml's device registry is built once, so set them before \
                         anything else uses llama.cpp"
                    )
                    .into(),
                })
            }
        }
        Ok(Self::init_locked(&mut handles))
    }

    fn init_locked(handles: &mut usize) -> LlamaBackend {
        if *handles == 0 {
            crate::logging::install();
            // SAFETY: called with no other handle alive, under the lock, so
            // init and free never race.
            unsafe { llama_safe_sys::llama_backend_init() };
        }
        *handles += 1;
        LlamaBackend { _private: () }
    }

    /// The ggml backend devices: the CPU, and GPUs or RPC servers when their
    /// features are built and present.
    pub fn devices(&self) -> Vec<Device> {
        registry_devices()
    }

    /// llama.cpp's system info line: the CPU features and backends built in.
    pub fn system_info(&self) -> String {
        // SAFETY: returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(llama_safe_sys::llama_print_system_info()) }
            .to_string_lossy()
            .trim()
            .to_string()
    }

    /// Whether this build can offload to a GPU.
    pub fn supports_gpu_offload(&self) -> bool {
        // SAFETY: pure query.
        unsafe { llama_safe_sys::llama_supports_gpu_offload() }
    }
}

impl Clone for LlamaBackend {
    fn clone(&self) -> Self {
        *HANDLES.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        LlamaBackend { _private: () }
    }
}

impl Drop for LlamaBackend {
    fn drop(&mut self) {
        let mut handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
        *handles -= 1;
        if *handles == 0 {
            // SAFETY: the last handle is gone, under the lock.
            unsafe { llama_safe_sys::llama_backend_free() };
        }
    }
}

/// What kind of device a ggml backend device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// A discrete GPU.
    Gpu,
    /// An integrated GPU.
    IntegratedGpu,
    /// An accelerator (BLAS and the like).
    Accelerator,
    /// Anything else ggml reports.
    Other,
}

/// A ggml backend device, as ggml reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Name used by llama.cpp's options, e.g. `CPU`, `CUDA0`, `RPC0`.
    pub name: String,
    /// Longer description, e.g. the GPU model.
    pub description: String,
    /// The kind.
    pub kind: DeviceKind,
    /// Free memory in bytes, as the backend reports it.
    pub memory_free: u64,
    /// Total memory in bytes.
    pub memory_total: u64,
}

impl Device {
    /// # Safety
    /// `dev` must be a device from the ggml backend registry.
    pub(crate) unsafe fn from_raw(dev: llama_safe_sys::ggml_backend_dev_t) -> Device {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: dev is a registry device (caller); names are static strings.
        unsafe {
            llama_safe_sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
            Device {
                name: CStr::from_ptr(llama_safe_sys::ggml_backend_dev_name(dev))
                    .to_string_lossy()
                    .into_owned(),
                description: CStr::from_ptr(llama_safe_sys::ggml_backend_dev_description(dev))
                    .to_string_lossy()
                    .into_owned(),
                kind: match llama_safe_sys::ggml_backend_dev_type(dev) {
                    llama_safe_sys::GGML_BACKEND_DEVICE_TYPE_CPU => DeviceKind::Cpu,
                    llama_safe_sys::GGML_BACKEND_DEVICE_TYPE_GPU => DeviceKind::Gpu,
                    llama_safe_sys::GGML_BACKEND_DEVICE_TYPE_IGPU => DeviceKind::IntegratedGpu,
                    llama_safe_sys::GGML_BACKEND_DEVICE_TYPE_ACCEL => DeviceKind::Accelerator,
                    _ => DeviceKind::Other,
                },
                memory_free: free as u64,
                memory_total: total as u64,
            }
        }
    }
}

/// Finds a device by its name (`CPU`, `CUDA0`, ...).
pub(crate) fn device_by_name(name: &str) -> Result<llama_safe_sys::ggml_backend_dev_t> {
    let c = std::ffi::CString::new(name).map_err(|_| Error::NulByte {
        what: "a device name",
    })?;
    // SAFETY: c is a valid C string; NULL means not found.
    let dev = unsafe { llama_safe_sys::ggml_backend_dev_by_name(c.as_ptr()) };
    if dev.is_null() {
        let available: Vec<String> = registry_devices().into_iter().map(|d| d.name).collect();
        return Err(Error::UnknownDevice {
            name: name.to_string(),
            available,
        });
    }
    Ok(dev)
}

/// The raw devices of the ggml backend registry.
fn raw_devices() -> impl Iterator<Item = llama_safe_sys::ggml_backend_dev_t> {
    // SAFETY: ggml_backend_dev_count initialises the registry on first use.
    let count = unsafe { llama_safe_sys::ggml_backend_dev_count() };
    // SAFETY: i is below the registry's device count.
    (0..count).map(|i| unsafe { llama_safe_sys::ggml_backend_dev_get(i) })
}

/// The names of the devices in the ggml backend registry (no memory
/// queries: cheap).
pub(crate) fn device_names() -> Vec<String> {
    raw_devices()
        .map(|dev| {
            // SAFETY: a registry device's name is a static NUL-terminated
            // string.
            unsafe { CStr::from_ptr(llama_safe_sys::ggml_backend_dev_name(dev)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Every device in the ggml backend registry.
fn registry_devices() -> Vec<Device> {
    raw_devices()
        // SAFETY: a device of the registry, as from_raw asks.
        .map(|dev| unsafe { Device::from_raw(dev) })
        .collect()
}
