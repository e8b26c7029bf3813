// The CUDA operators compiled by nvcc for nnkern._cuda (the same source as ops_emu.cpp).
#include "cuda/ops_impl.h"
