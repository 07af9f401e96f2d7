// The Vulkan physical devices the loader sees, in its order, so that
// llama-safe can show ggml-vulkan every one of them (through
// GGML_VK_VISIBLE_DEVICES) when the user asks for software devices too:
// by default ggml-vulkan skips CPU-type devices such as Mesa's lavapipe.
//
// Compiled with LLAMA_SYS_VULKAN only in builds with the `vulkan` feature;
// elsewhere the function reports that there is no Vulkan.

#include <stddef.h>

#ifdef LLAMA_SYS_VULKAN
#include <vulkan/vulkan.h>
#include <vector>
#endif

extern "C" {

// Writes the VkPhysicalDeviceType of up to `cap` devices to `types` and
// returns how many devices there are; -1 without Vulkan (no feature, no
// loader, no driver). Never throws: the plain C API only.
int llama_sys_vk_physical_devices(int * types, size_t cap) {
#ifdef LLAMA_SYS_VULKAN
    VkApplicationInfo app = {};
    app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
    app.pApplicationName = "llama-safe device count";
    app.apiVersion = VK_API_VERSION_1_0;
    VkInstanceCreateInfo info = {};
    info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
    info.pApplicationInfo = &app;
    VkInstance instance = VK_NULL_HANDLE;
    if (vkCreateInstance(&info, nullptr, &instance) != VK_SUCCESS) {
        return -1;
    }
    uint32_t count = 0;
    int result = -1;
    if (vkEnumeratePhysicalDevices(instance, &count, nullptr) == VK_SUCCESS) {
        std::vector<VkPhysicalDevice> devices(count);
        VkResult r = vkEnumeratePhysicalDevices(instance, &count, devices.data());
        if (r == VK_SUCCESS || r == VK_INCOMPLETE) {
            for (uint32_t i = 0; i < count && i < cap; i++) {
                VkPhysicalDeviceProperties props;
                vkGetPhysicalDeviceProperties(devices[i], &props);
                types[i] = (int) props.deviceType;
            }
            result = (int) count;
        }
    }
    vkDestroyInstance(instance, nullptr);
    return result;
#else
    (void) types;
    (void) cap;
    return -1;
#endif
}

}
