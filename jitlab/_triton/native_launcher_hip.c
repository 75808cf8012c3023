/* jitlab's native launcher for Triton's HIP backend: native_launcher.c with the HIP driver layer
 * (native_hip.h), built into its own module `_jitlab_native_hip` by hip.py against the HIP headers that
 * Triton ships (triton/backends/amd/include). */
#define JITLAB_HIP 1
#include "native_launcher.c"
