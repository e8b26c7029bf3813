"""Native conv2d / conv2d_backward (csrc/conv/) under every kernel family, at the contract level.

Shapes are picked to reach each path and its edges: Winograd F(4x4, 3x3) (float32, AVX-512: partial
tiles, no/asymmetric padding, tiles gathered across rows and images, rows of more than 32 tiles (the
row transforms), several tile blocks; grad_input as a Winograd conv when padding <= 2), few channels at stride 1 (the direct kernels, AVX-512), 1x1 as a GEMM on NCHW (and 1x1 with stride, which is not), im2col tiles inside
one image and tiles spanning images, several tiles per image, one input channel per group (depthwise and
channel multipliers: the direct row kernels) with output rows around the vector widths (8, 16), strides
1/2/3, dilation, asymmetric padding, and the fused epilogue; depthwise 3x3 stride 1 (the whole-plane
kernels of csrc/conv/dw3x3_impl.h) at widths 1, 2, 15, 17, 33, 70, heights 1..5, padding 0..3 and beyond
the plane, channel multipliers, non-contiguous inputs, and every output mask of the backward (one pass
computes the requested gradients: the bits must not depend on the mask). Results are compared
with the float64 NumPy reference; thread counts 1 and 2 and reruns must give identical bits.
"""
import numpy as np
import pytest

import nnkern
import nnkern._cpu as _cpu
from nnkern._shapes import conv_output_size
from nnkern.backends.native import conv as native
from nnkern.backends.numpy_ref import conv as ref
from helpers import checked_path_calls

ISAS = _cpu.supported_isas()
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

# (n, c, h, w, o, kh, kw, stride, padding (t, b, l, r), dilation, groups)
CASES = {
    "1x1 gemm on nchw": (3, 8, 5, 7, 6, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1 stride 2": (2, 6, 7, 9, 5, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "1x1 padded, groups 2": (2, 6, 4, 5, 4, 1, 1, (1, 1), (1, 0, 0, 1), (1, 1), 2),
    "1x1 large plane": (2, 40, 33, 35, 30, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "3x3 tiles span images": (9, 5, 6, 5, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "3x3 several tiles per image": (2, 70, 30, 29, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "5x3 s(2,3) d(2,1) asym pad": (2, 4, 17, 19, 5, 5, 3, (2, 3), (2, 0, 1, 3), (2, 1), 1),
    "grouped 3x3": (2, 12, 9, 11, 8, 3, 3, (1, 1), (1, 2, 0, 1), (1, 1), 4),
    "7x7 s2 stem": (2, 3, 23, 21, 10, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    "depthwise 3x3 s1 w17": (2, 5, 9, 17, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 5),
    "depthwise 3x3 s2 w33": (2, 4, 11, 33, 4, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 4),
    # depthwise 3x3 stride 1 (whole-plane kernels): widths around the vector widths, heights 1..5,
    # padding 0..3 (above 2 grad_input crops), channel multipliers, enough channels for the fused backward
    "dw3x3 s1 width 1 height 5": (1, 3, 5, 1, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3),
    "dw3x3 s1 width 2 height 1": (2, 3, 1, 2, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3),
    "dw3x3 s1 width 15 height 2": (1, 4, 2, 15, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4),
    "dw3x3 s1 width 17 height 3 unpadded": (2, 3, 3, 17, 3, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 3),
    "dw3x3 s1 width 33 height 4 asym pad": (1, 3, 4, 33, 3, 3, 3, (1, 1), (2, 0, 0, 2), (1, 1), 3),
    "dw3x3 s1 padding 3 (grad_input crops)": (2, 2, 5, 16, 2, 3, 3, (1, 1), (3, 1, 0, 4), (1, 1), 2),
    "dw3x3 s1 wide rows": (1, 2, 6, 70, 2, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
    "dw3x3 s1 huge padding (masks per block)": (1, 2, 4, 5, 2, 3, 3, (1, 1), (9, 0, 70, 75), (1, 1), 2),
    "dw3x3 s1 channel multiplier": (2, 3, 5, 17, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3),
    "dw3x3 s1 six channels": (2, 6, 7, 19, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 6),
    "dw3x3 s1 many channels": (3, 16, 9, 40, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16),
    "dw3x3 s1 channel multiplier, padding 0": (3, 4, 6, 18, 12, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 4),
    "dw3x3 d2 (row kernels)": (2, 3, 9, 20, 3, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 3),
    "depthwise 5x5 d2 asym": (1, 3, 16, 16, 3, 5, 5, (1, 1), (3, 1, 0, 4), (2, 2), 3),
    "depthwise s3 width 1": (2, 3, 7, 1, 3, 3, 1, (3, 1), (1, 1, 0, 0), (1, 1), 3),
    "channel multiplier s2": (2, 3, 10, 8, 9, 3, 3, (2, 1), (1, 1, 1, 1), (1, 1), 3),
    "one input channel (LeNet)": (5, 1, 12, 16, 6, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    # several output channels per input row at once (AVX-512): blocks of 4 + remainders 1..3, rows
    # of 1..3 32-pixel steps with tails in either vector, strides and dilation
    "channel multiplier 5, wide rows": (2, 2, 11, 75, 10, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 2),
    "channel multiplier 7, s2 narrow": (1, 1, 9, 20, 7, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "channel multiplier 2, d2": (2, 3, 12, 40, 6, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 3),
    "channel multiplier 3, 17 wide": (3, 2, 7, 17, 6, 2, 3, (1, 1), (0, 1, 1, 1), (1, 1), 2),
    # the whole-plane weight gradient (AVX-512): taps in chunks of 8 (kw 11: two chunks), strides, LeNet's conv1
    "channel multiplier, 1x11 kernel": (2, 2, 5, 37, 4, 1, 11, (1, 1), (0, 0, 5, 4), (1, 1), 2),
    "channel multiplier, 2x9 kernel s2 d2": (2, 1, 9, 41, 3, 2, 9, (2, 2), (1, 0, 3, 2), (1, 2), 1),
    "lenet conv1 shape": (3, 1, 32, 32, 6, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "winograd odd sizes, C/O not /16": (2, 20, 13, 11, 18, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "winograd unpadded, batch 1": (1, 16, 9, 22, 17, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "winograd asymmetric padding": (3, 24, 7, 7, 32, 3, 3, (1, 1), (2, 0, 0, 2), (1, 1), 1),
    "winograd rows over 16 tiles": (1, 16, 6, 70, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "winograd rows over 32 tiles (row transforms)": (2, 16, 5, 133, 17, 3, 3, (1, 1), (1, 2, 0, 1), (1, 1), 1),
    "winograd many channels": (2, 130, 10, 9, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "winograd padding 2 (grad_input unpadded)": (2, 16, 8, 9, 20, 3, 3, (1, 1), (2, 2, 2, 2), (1, 1), 1),
    "winograd padding 3 (grad_input by col2im)": (1, 16, 5, 6, 16, 3, 3, (1, 1), (3, 1, 3, 0), (1, 1), 1),
    "winograd several blocks": (2, 64, 40, 38, 48, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    # pixel-rows GEMM (float32, AVX-512: O a multiple of 32, pixels per image not): row tiles across
    # images and output rows, partial row tiles, padding on every edge, several kc slices (k > 512),
    # several tiles per image, stride 1 and 2, batch 1
    "pixel rows s2, tiles span images": (3, 8, 9, 9, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "pixel rows s2 odd plane, batch 1": (1, 5, 13, 11, 64, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "pixel rows 5x5 s1 asym pad": (2, 3, 10, 9, 64, 5, 5, (1, 1), (2, 1, 0, 2), (1, 1), 1),
    "pixel rows 1x1 s2": (2, 20, 13, 13, 32, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "pixel rows deep k": (2, 60, 11, 11, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "pixel rows several tiles per image": (1, 64, 61, 61, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "pixel rows s3 d2 wide pad": (2, 7, 12, 14, 64, 3, 3, (3, 3), (4, 2, 5, 3), (2, 2), 1),
    # its implicit form (batch >= threads, stride 1 or 2: A read in place from the padded image)
    "pixel rows implicit s2 d2 asym pad": (2, 9, 33, 31, 32, 3, 3, (2, 2), (2, 1, 0, 3), (2, 2), 1),
    "pixel rows implicit s1 3x2, two row tiles per row": (3, 5, 6, 31, 64, 3, 2, (1, 1), (1, 0, 0, 1), (1, 1), 1),
    # planes of a multiple of 32 pixels take the pixel-rows GEMM too when its implicit form fits (a stem
    # 7x7 s2; several kc slices), packed patches for batch 1 on 2 threads: the same bits either way
    "pixel rows implicit, plane of 64 pixels, 7x7 s2": (2, 3, 16, 16, 32, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    "pixel rows implicit, plane of 64 pixels, k > 512": (2, 60, 8, 8, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "pixel rows, plane of 64 pixels, k > 512, batch 1": (1, 60, 8, 8, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    # few channels, stride 1 (AVX-512: the direct kernels of csrc/conv/direct.h): LeNet's conv2, rows of
    # several 16-pixel segments with tails, exactly 16 wide, padding (scratch planes; grad_input crops
    # when the padding exceeds the kernel), dilation, output-channel blocks with remainders, 32 outputs,
    # batch 1 (channels split over threads), 9 images (weight-gradient batches of 8 plus a tail); unpadded
    # with 9..16 outputs and kw 2..7: the weight gradient with the output channels in the lanes; with one
    # input channel (the LeNet cases above) the weight gradient takes the row tile too
    "direct lenet conv2": (3, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "direct wide rows, asym pad": (2, 3, 9, 37, 7, 3, 3, (1, 1), (1, 1, 2, 0), (1, 1), 1),
    "direct 16 wide, dilation 2": (1, 5, 12, 18, 5, 3, 3, (1, 1), (1, 1, 1, 1), (2, 2), 1),
    "direct unpadded, dilation 2, 12 outputs": (2, 3, 9, 14, 12, 3, 3, (1, 1), (0, 0, 0, 0), (2, 2), 1),
    "direct 9 images, 2x4 kernel": (9, 4, 7, 11, 9, 2, 4, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "direct 32 outputs, padding 3": (2, 3, 6, 8, 32, 3, 3, (1, 1), (3, 0, 3, 1), (1, 1), 1),
    # the same shapes with 16+ images: the image-lanes forward and grad_input (image_lanes.h), 16 images
    # per vector, a partial last group, one input channel, rows wider than 16 pixels, asymmetric padding
    # and dilation, 32 outputs; padding beyond (k - 1) * d sends grad_input back to the direct kernel
    "image lanes lenet conv2, 17 images": (17, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "image lanes one input channel, 32 images": (32, 1, 12, 13, 6, 5, 5, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "image lanes wide rows, pad, dilation": (33, 3, 9, 37, 7, 3, 3, (1, 1), (1, 2, 2, 1), (2, 1), 1),
    "image lanes 32 outputs, padding 3": (16, 3, 6, 8, 32, 3, 3, (1, 1), (3, 0, 3, 1), (1, 1), 1),
    # the weight gradient without im2col (wgrad_taps.h: column stride 1 or 2, 4..14 taps, output planes of
    # 256+ pixels, more than 32 outputs or deeper than 1024): a partial 32-wide panel, dilation and
    # asymmetric padding, 2x7 and 2x2 kernels, rows wider than a 512-pixel slice, batch 1, strides 2 and 3 x 2
    "wgrad taps partial panel, dilation, asym pad": (3, 4, 20, 16, 33, 2, 3, (1, 1), (1, 0, 2, 1), (2, 1), 1),
    "wgrad taps 2x7, 70 outputs": (2, 3, 20, 20, 70, 2, 7, (1, 1), (0, 1, 3, 3), (1, 1), 1),
    "wgrad taps 2x2, deep": (2, 300, 17, 17, 32, 2, 2, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "wgrad taps wide rows, batch 1": (1, 3, 4, 600, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "wgrad taps stride 2": (2, 5, 33, 35, 40, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "wgrad taps stride 3 x 2, dilation": (2, 4, 50, 37, 33, 3, 3, (3, 2), (2, 0, 1, 2), (1, 2), 1),
    "direct batch 1, one output row": (1, 2, 3, 40, 6, 3, 2, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "3x3 tiles span images, 40 outputs (gemm)": (9, 5, 6, 5, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "zero batch": (0, 4, 6, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "zero batch depthwise": (0, 4, 6, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4),
    # a 1x1 convolution's GEMM with B read in place (the strided AVX-512 kernel) on row remainders of
    # 7, 9 and 11 output channels after a whole 14-row tile
    "1x1 gemm on nchw, 21 outputs": (2, 8, 5, 7, 21, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1 gemm on nchw, 23 outputs": (2, 8, 5, 7, 23, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1 gemm on nchw, 25 outputs": (2, 8, 5, 7, 25, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    # depthwise row kernels (AVX-512): kernel widths 2 and 4..7 and 12 (8 + 4) for the weight gradient's
    # taps per kernel row, unit and non-unit column stride; channel multipliers 1, 4, 8 and 9 (blocks of 8
    # channels and remainders)
    "depthwise 2x2 s1": (2, 4, 6, 9, 4, 2, 2, (1, 1), (0, 0, 0, 0), (1, 1), 4),
    "depthwise 1x4 s1 multiplier 4": (2, 3, 6, 12, 12, 1, 4, (1, 1), (0, 0, 0, 0), (1, 1), 3),
    "depthwise 2x5 s2 multiplier 4": (2, 2, 8, 15, 8, 2, 5, (2, 2), (1, 1, 2, 2), (1, 1), 2),
    "depthwise 3x6 s1 multiplier 8": (1, 2, 7, 20, 16, 3, 6, (1, 1), (1, 1, 2, 3), (1, 1), 2),
    "depthwise 1x7 s(1,2) multiplier 9": (2, 2, 5, 23, 18, 1, 7, (1, 2), (0, 0, 3, 3), (1, 1), 2),
    "depthwise 1x12 s1": (1, 2, 3, 30, 2, 1, 12, (1, 1), (0, 0, 5, 6), (1, 1), 2),
    "depthwise 2x6 s2": (2, 3, 9, 21, 3, 2, 6, (2, 2), (1, 0, 2, 2), (1, 1), 3),
    "depthwise 3x2 s2": (2, 3, 9, 14, 3, 3, 2, (2, 2), (1, 1, 0, 1), (1, 1), 3),
    "depthwise 1x4 s2": (1, 2, 4, 19, 2, 1, 4, (1, 2), (0, 0, 1, 2), (1, 1), 2),
    "depthwise 2x7 s1": (2, 2, 6, 25, 2, 2, 7, (1, 1), (0, 1, 3, 3), (1, 1), 2),
    # dw3x3 weight gradients whose last row group is 1 or 2 rows (groups of 4 rows on AVX-512, 2 otherwise)
    "dw3x3 s1 height 9": (2, 3, 9, 18, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 3),
    "dw3x3 s1 height 10": (1, 2, 10, 20, 2, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
}

# The implicit pixel-rows kernel (AVX-512) at every tile height: an output row of w <= 14 pixels is one
# tile of w rows, at pixel stride 1 (64 outputs, past the direct kernels' 32) and 2 (C3 and C4 run
# 14-pixel tiles at stride 2); enough rows for 14+ pixels per image, two images (one per thread).
for _s in (1, 2):
    for _w in range(1, 15):
        _oh = max(2, -(-14 // _w))
        CASES[f"pixel rows implicit s{_s}, tiles of {_w} pixels"] = (
            2, 2, _s * (_oh - 1) + 1, _s * (_w - 1) + 1, 64 if _s == 1 else 32, 3, 3, (_s, _s), (1, 1, 1, 1),
            (1, 1), 1)
# The weight gradient without im2col at every tap count it takes (4..14: one kernel per count) and both
# column strides: 16 x 16 output planes (256 pixels), 40 outputs (past the direct kernels' 32).
for _kh, _kw in ((2, 2), (1, 5), (2, 3), (1, 7), (2, 4), (3, 3), (2, 5), (1, 11), (3, 4), (1, 13), (2, 7)):
    for _s in (1, 2):
        CASES[f"wgrad taps {_kh}x{_kw}, stride {_s}"] = (
            1, 2, _s * 15 + _kh, _s * 15 + _kw, 40, _kh, _kw, (_s, _s), (0, 0, 0, 0), (1, 1), 1)


def make(case, dtype, seed=0):
    n, c, h, w, o, kh, kw, stride, pad, dil, groups = CASES[case]
    rng = np.random.default_rng(seed)
    oh = conv_output_size(h, kh, stride[0], pad[0], pad[1], dil[0])
    ow = conv_output_size(w, kw, stride[1], pad[2], pad[3], dil[1])
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (0.5 * rng.standard_normal((o, c // groups, kh, kw))).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    residual = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    grad = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return x, weight, bias, residual, grad, (stride, pad, dil, groups)


def rel_err(out, expected):
    expected = np.asarray(expected, np.float64)
    denom = np.linalg.norm(expected)
    return np.linalg.norm(np.asarray(out, np.float64) - expected) / (denom if denom > 0 else 1.0)


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


@pytest.fixture
def threads():
    before = nnkern.get_num_threads()
    yield nnkern.set_num_threads
    nnkern.set_num_threads(before)


def run_all(x, weight, bias, residual, grad, geo):
    stride, pad, dil, groups = geo
    outs = [native.OPS["conv2d"](x, weight, None, stride, pad, dil, groups, None, None),
            native.OPS["conv2d"](x, weight, bias, stride, pad, dil, groups, "relu", residual)]
    outs += native.OPS["conv2d_backward"](grad, x, weight, stride, pad, dil, groups, (True, True, True))
    return outs


def assert_matches_reference(x, weight, bias, residual, grad, geo, what=""):
    """run_all's five results (plain and fused forward, the three gradients) against the float64 reference
    of the same rounded inputs: dtype, shape and relative error."""
    x64, w64, b64, r64, g64 = f64(x, weight, bias, residual, grad)
    expected = [ref.conv2d(x64, w64, None, *geo, None, None), ref.conv2d(x64, w64, b64, *geo, "relu", r64)]
    expected += ref.conv2d_backward(g64, x64, w64, *geo, (True, True, True))
    got = run_all(x, weight, bias, residual, grad, geo)
    for name, out, exp in zip(["out", "out fused", "grad_input", "grad_weight", "grad_bias"], got, expected):
        assert out.dtype == x.dtype and out.shape == exp.shape, f"{name} {what}"
        assert rel_err(out, exp) <= TOL[x.dtype], f"{name} {what}"


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_against_reference(isa, dtype, case):
    assert_matches_reference(*make(case, dtype))


@pytest.mark.parametrize("case", ["1x1 large plane", "3x3 several tiles per image", "3x3 tiles span images",
                                  "pixel rows s2, tiles span images", "pixel rows several tiles per image",
                                  "pixel rows implicit s2 d2 asym pad", "pixel rows implicit s1 3x2, two row tiles per row",
                                  "pixel rows implicit, plane of 64 pixels, k > 512",
                                  "pixel rows, plane of 64 pixels, k > 512, batch 1",
                                  "winograd odd sizes, C/O not /16", "winograd several blocks",
                                  "winograd rows over 32 tiles (row transforms)", "grouped 3x3", "depthwise 3x3 s2 w33", "channel multiplier s2",
                                  "dw3x3 s1 six channels", "dw3x3 s1 many channels", "dw3x3 s1 channel multiplier",
                                  "channel multiplier 5, wide rows", "one input channel (LeNet)",
                                  "image lanes lenet conv2, 17 images", "image lanes wide rows, pad, dilation",
                                  "wgrad taps partial panel, dilation, asym pad", "wgrad taps 2x7, 70 outputs",
                                  "wgrad taps stride 3 x 2, dilation"])
def test_same_bits_for_one_and_two_threads_and_reruns(case, threads):
    x, weight, bias, residual, grad, geo = make(case, np.float32, seed=1)
    threads(1)
    one = run_all(x, weight, bias, residual, grad, geo)
    threads(2)
    two = run_all(x, weight, bias, residual, grad, geo)
    again = run_all(x, weight, bias, residual, grad, geo)
    for a, b, c in zip(one, two, again):
        assert np.array_equal(a, b) and np.array_equal(b, c)


def test_output_mask_and_non_contiguous_input():
    x, weight, bias, residual, grad, geo = make("grouped 3x3", np.float32, seed=2)
    stride, pad, dil, groups = geo
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # same values, other strides
    gx, gw, gb = native.OPS["conv2d_backward"](grad, xt, weight, stride, pad, dil, groups, (False, True, False))
    assert gx is None and gb is None
    full = native.OPS["conv2d_backward"](grad, x, weight, stride, pad, dil, groups, (True, True, True))
    assert np.array_equal(gw, full[1])
    assert np.array_equal(native.OPS["conv2d"](xt, weight, bias, stride, pad, dil, groups, None, None),
                          native.OPS["conv2d"](x, weight, bias, stride, pad, dil, groups, None, None))


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("case", ["dw3x3 s1 width 33 height 4 asym pad", "dw3x3 s1 channel multiplier, padding 0",
                                  "depthwise 3x3 s2 w33", "dw3x3 s1 height 9", "dw3x3 s1 height 10",
                                  "dw3x3 s1 six channels"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_non_contiguous_input_and_output_mask(isa, case, dtype):
    x, weight, bias, residual, grad, geo = make(case, dtype, seed=3)
    stride, pad, dil, groups = geo
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # same values, other strides
    gt = np.empty(grad.shape[:3] + (2 * grad.shape[3],), grad.dtype)[..., ::2]  # every other column
    gt[...] = grad
    assert not xt.flags.c_contiguous and not gt.flags.c_contiguous
    assert np.array_equal(native.OPS["conv2d"](xt, weight, bias, stride, pad, dil, groups, "relu", residual),
                          native.OPS["conv2d"](x, weight, bias, stride, pad, dil, groups, "relu", residual))
    full = native.OPS["conv2d_backward"](grad, x, weight, stride, pad, dil, groups, (True, True, True))
    for mask in [(True, False, False), (False, True, False), (False, False, True), (True, False, True),
                 (False, True, True)]:
        got = native.OPS["conv2d_backward"](gt, xt, weight, stride, pad, dil, groups, mask)
        for want, g, f in zip(mask, got, full):
            assert (g is None) != want
            if want:
                assert np.array_equal(g, f)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("width", [14, 15, 17, 19, 22, 25, 27, 28, 29, 41])
def test_pixel_rows_every_row_tile_height(isa, width, threads):
    """One output row of `width` pixels (1 x 3 kernel, O = 64): on AVX-512 the pixel-rows GEMM cuts it
    into balanced row tiles of 7..14 pixels (the transposed-store kernel at each of those heights), with
    the fused relu + residual; one and two threads (a tile per thread: other heights) give the same bits."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((1, 6, 1, width + 2)).astype(np.float32)
    weight = (0.5 * rng.standard_normal((64, 6, 1, 3))).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    residual = rng.standard_normal((1, 64, 1, width)).astype(np.float32)
    geo = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    expected = ref.conv2d(*f64(x, weight, bias), *geo, "relu", residual.astype(np.float64))
    got = []
    for n_threads in (1, 2):
        threads(n_threads)
        out = native.OPS["conv2d"](x, weight, bias, *geo, "relu", residual)
        assert rel_err(out, expected) <= TOL[np.dtype(np.float32)]
        got.append(out)
    assert rel_err(native.OPS["conv2d"](x, weight, None, *geo, None, None),
                   ref.conv2d(*f64(x, weight), None, *geo, None, None)) <= TOL[np.dtype(np.float32)]
    assert np.array_equal(got[0], got[1])
    assert np.array_equal(got[1], native.OPS["conv2d"](x, weight, bias, *geo, "relu", residual))


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("plane", [(8, 8), (4, 12), (5, 7), (16, 20)])
def test_1x1_input_read_in_place_at_every_offset_into_a_cache_line(isa, plane, threads):
    """A 1x1 convolution multiplies its input planes in place (the strided AVX-512 kernel), with column
    panels that start on cache-line boundaries when every plane row starts at the same offset into a line
    (planes of a multiple of 16 floats; NumPy aligns arrays to 16 bytes only): the input copied to each of
    the 16 float offsets into a 64-byte line gives the same bits, at one and two threads, and the reference's
    values (21 outputs: a row remainder; 2 images)."""
    h, w = plane
    rng = np.random.default_rng(h * w)
    x = rng.standard_normal((2, 9, h, w)).astype(np.float32)
    weight = (0.5 * rng.standard_normal((21, 9, 1, 1))).astype(np.float32)
    bias = rng.standard_normal(21).astype(np.float32)
    geo = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    expected = ref.conv2d(*f64(x, weight, bias), *geo, None, None)
    buf = np.empty(x.size + 32, np.float32)
    base = (-(buf.ctypes.data // 4)) % 16  # buf[base] starts a 64-byte line
    first = None
    for n_threads in (1, 2):
        threads(n_threads)
        for offset in range(16):
            xo = buf[base + offset:base + offset + x.size].reshape(x.shape)
            xo[...] = x
            assert xo.ctypes.data % 64 == 4 * offset
            out = native.OPS["conv2d"](xo, weight, bias, *geo, None, None)
            assert rel_err(out, expected) <= TOL[np.dtype(np.float32)], (n_threads, offset)
            if first is None:
                first = out
            assert np.array_equal(out, first), (n_threads, offset)


def test_weight_gradient_over_image_chunks():
    """Images whose padded copies and packed grad_output exceed the taps weight gradient's 64 MB chunk two
    at a time (2 -> 40 channels, 400 x 400 planes: ~42 MB each) are summed chunk by chunk, in image order."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 400, 400)).astype(np.float32)
    w = rng.standard_normal((40, 2, 2, 2)).astype(np.float32)
    g = rng.standard_normal((2, 40, 399, 399)).astype(np.float32)
    got = nnkern.conv2d_backward(g, x, w, 1, 0, 1, 1, output_mask=(False, True, False))[1]
    x64, w64, g64 = f64(x, w, g)
    expected = ref.conv2d_backward(g64, x64, w64, (1, 1), (0, 0, 0, 0), (1, 1), 1, (False, True, False))[1]
    assert rel_err(got, expected) <= TOL[np.dtype(np.float32)]


def check_unpadded_stride_1(rng, n, c, kh, kw, outputs, oh, ow):
    """An unpadded stride-1 float32 convolution of these sizes against the reference (assert_matches_reference)."""
    x = rng.standard_normal((n, c, oh + kh - 1, ow + kw - 1)).astype(np.float32)
    weight = (0.5 * rng.standard_normal((outputs, c, kh, kw))).astype(np.float32)
    bias = rng.standard_normal(outputs).astype(np.float32)
    residual = rng.standard_normal((n, outputs, oh, ow)).astype(np.float32)
    grad = rng.standard_normal((n, outputs, oh, ow)).astype(np.float32)
    assert_matches_reference(x, weight, bias, residual, grad, ((1, 1), (0, 0, 0, 0), (1, 1), 1),
                             f"n={n} c={c} k={kh}x{kw} out {oh}x{ow}")


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("outputs", [1, 2, 3, 9, 16, 17, 18, 20, 23, 29, 32])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_direct_kernels_every_tile_shape(isa, outputs, n_threads, threads):
    """Few-channel stride-1 convolutions of one image (the direct kernels of direct.h on AVX-512). Up to 16
    outputs: the channels in the lanes, rows cut into balanced segments of 1..16 pixels. 17..32 outputs:
    row tiles of the channels a task owns (one image: split over 1..3 threads) -- up to 6 as one block,
    more in balanced blocks of at most 4 -- against balanced runs of up to 6 16-pixel row segments, with
    unmasked loads where the buffer goes on and masked ones at its end. The weight gradient: tiles of at
    most 4 channels x 6 taps (one input channel too), or with 9..16 outputs the channels in the lanes
    (kw 2..7); grad_input as the same kernels with the channels swapped."""
    threads(n_threads)
    rng = np.random.default_rng(outputs)
    for c, (kh, kw) in [(2, (1, 2)), (3, (2, 2)), (2, (3, 3)), (5, (1, 5)), (1, (1, 3)), (1, (1, 7)), (2, (2, 6))]:
        for oh, ow in [(3, 1), (1, 2), (2, 3), (1, 4), (2, 5), (1, 6), (3, 7), (2, 16), (1, 17), (3, 33), (7, 40)]:
            check_unpadded_stride_1(rng, 1, c, kh, kw, outputs, oh, ow)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("outputs", [1, 2, 3, 4, 5, 6, 7])
def test_image_lanes_every_tile_shape(isa, outputs, threads):
    """16 images (image_lanes.h on AVX-512: the images in the lanes): tiles of up to 6 output channels
    (balanced blocks) x up to 4 output pixels of a row (rows of 1..7 pixels: every remainder), forward and
    grad_input (the same tiles with the channels swapped)."""
    threads(1)
    rng = np.random.default_rng(100 + outputs)
    for c, (kh, kw) in [(2, (2, 2)), (1, (3, 3)), (3, (1, 2))]:
        for oh, ow in [(2, 1), (1, 2), (2, 3), (1, 5), (2, 6), (1, 7)]:
            check_unpadded_stride_1(rng, 16, c, kh, kw, outputs, oh, ow)


def test_conv2d_common_call_skips_the_checks_with_the_same_result(monkeypatch):
    """NumPy float arrays of one dtype, a batched input and a 4-D weight go straight to the native
    conv2d / conv2d_backward (options still validated, from the cache); results equal the checked
    path's, and what the common path declines -- or rejects -- gets the checked path's answers and errors."""
    from nnkern.functional import _common, conv as fconv
    rng = np.random.default_rng(23)
    checked_calls = checked_path_calls(monkeypatch)
    cases = []
    for dtype in (np.float32, np.float64):
        for stride, padding, dilation, groups in [(1, 1, 1, 1), (2, 0, 1, 2), ((1, 2), "same", 1, 1), (1, "valid", 2, 1)]:
            if padding == "same" and stride != 1:
                continue
            x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
            w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(dtype)
            for b in (None, rng.standard_normal(6).astype(dtype)):
                for backend in (None, "cpu", "auto"):
                    assert fconv._conv2d_native(x, w, b, None, backend) is not None
                    y = nnkern.conv2d(x, w, b, stride, padding, dilation, groups, backend=backend)
                    r = rng.standard_normal(y.shape).astype(dtype)
                    yr = nnkern.conv2d(x, w, b, stride, padding, dilation, groups, activation="relu", residual=r,
                                       backend=backend)
                    g = rng.standard_normal(y.shape).astype(dtype)
                    grads = nnkern.conv2d_backward(g, x, w, stride, padding, dilation, groups, (True, False, True),
                                                   backend=backend)
                    cases.append(((x, w, b, stride, padding, dilation, groups, backend, r, g), (y, yr, grads)))
    assert cases and not checked_calls  # every call above took the common path
    x32 = np.ones((1, 2, 5, 5), np.float32)
    w32 = np.ones((3, 2, 3, 3), np.float32)
    declined = [(x32[0], w32, None, None, None),                  # unbatched: the checked path adds the batch
                (x32, w32.astype(np.float64), None, None, None),  # mixed dtypes: the checked path's error
                (x32.tolist(), w32, None, None, None),
                (x32, w32[0], None, None, None),                  # a 3-D weight: the checked path's error
                (x32, w32, None, None, "numpy")]
    for x, w, b, r, backend in declined:
        assert fconv._conv2d_native(x, w, b, r, backend) is None
    # errors raised on the common path are the checked path's
    errors = []
    for kwargs in [dict(stride=0), dict(padding="same", stride=2), dict(groups=3), dict(activation="tanh"),
                   dict(residual=np.ones((1, 3, 4, 4), np.float32))]:
        with pytest.raises((ValueError, TypeError)) as info:
            nnkern.conv2d(x32, w32, **kwargs)
        errors.append((kwargs, type(info.value), str(info.value)))
    with pytest.raises(ValueError) as info:
        nnkern.conv2d_backward(np.ones((1, 3, 4, 4), np.float32), x32, w32)
    errors.append(("backward", type(info.value), str(info.value)))
    monkeypatch.setattr(_common, "native_op", lambda *args: None)
    for (x, w, b, stride, padding, dilation, groups, backend, r, g), (y, yr, grads) in cases:
        np.testing.assert_array_equal(y, nnkern.conv2d(x, w, b, stride, padding, dilation, groups, backend=backend))
        np.testing.assert_array_equal(yr, nnkern.conv2d(x, w, b, stride, padding, dilation, groups, activation="relu",
                                                        residual=r, backend=backend))
        checked = nnkern.conv2d_backward(g, x, w, stride, padding, dilation, groups, (True, False, True),
                                         backend=backend)
        assert grads[1] is None and checked[1] is None
        np.testing.assert_array_equal(grads[0], checked[0])
        np.testing.assert_array_equal(grads[2], checked[2])
        assert y.dtype == x.dtype and grads[0].dtype == x.dtype
    for kwargs, kind, message in errors:
        with pytest.raises(kind) as info:
            if kwargs == "backward":
                nnkern.conv2d_backward(np.ones((1, 3, 4, 4), np.float32), x32, w32)
            else:
                nnkern.conv2d(x32, w32, **kwargs)
        assert str(info.value) == message
