// The CUDA operators compiled by the host compiler against the emulator, for
// nnkern._cuda_emu (the same source as ops.cu).
#include "cuda/ops_impl.h"
