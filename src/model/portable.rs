//! The portable network path: the same function as [`super::net`] in a few hundred plain
//! candle tensor operations, for devices without our CPU kernels (CUDA, Metal).
//!
//! candle's `conv2d` with `groups = C` runs `C` separate convolutions and concatenates them,
//! so the stock transcription issues thousands of operations per frame; on a GPU each is a
//! kernel launch. Here every layer is a handful of whole-tensor operations:
//!
//! - **depthwise `k`x`k` (and the dense stem)**: one `index_select` writes the input
//!   zero-padded (TensorFlow SAME exactly) and split into stride phases, one copy
//!   materialises the overlapping windows (an "unfold"/im2col), then one batched matmul
//!   `[C, 1, T] x [C, T, Ho*Wo]` applies the per-channel taps (the stem: one matmul
//!   `[16, 48] x [48, Ho*Wo]`). `T = k*k` at stride 1; at stride 2 the windows are taken per
//!   phase, `T = (k+1)^2` with zero weights outside the kernel (16 for 3x3, 36 for 5x5);
//! - **pointwise 1x1**: one matmul `[Cout, Cin] x [Cin, H*W]` and a broadcast bias;
//! - **squeeze-excite gates**: mean, two tiny matmuls, a broadcast multiply;
//! - **bilinear 2x upsampling** (half-pixel centres, edge clamp, TFLite `RESIZE_BILINEAR`):
//!   two matmuls with fixed interpolation matrices, `[C*H, W] x [W, 2W]` then
//!   `[C, 2H, H] x [C, H, 2W]`;
//! - **hard-swish** `x * min(relu(x / 6 + 1/2), 1)` with a device-resident constant (candle's
//!   scalar `clamp` uploads its bounds on every call).
//!
//! Every operation used has a backward pass in candle 0.11.1 (`index_select`, `matmul`, `cat`,
//! binary and unary ops, `sigmoid`): no `upsample_bilinear2d` (no backward) and no padded
//! `conv2d` (its backward supports only symmetric padding), so training can reuse this path.
//! Constant tensors (gather indices, interpolation matrices) depend on the input size only;
//! they are built on the host once per size, uploaded, and cached.
//!
//! Feature maps are carried as `[C, H*W]` tensors with their `(H, W)`.
//!
//! [`super::ops`] counts the tensor operations one forward issues (`ai-background bench
//! --path portable`).

use super::kernels::{same_padding, Activation};
use super::net::BLOCKS;
use super::ops::count;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use parking_lot::Mutex;
use std::collections::HashMap;

/// A feature map: `t` is `[C, H*W]`.
#[derive(Clone, Debug)]
struct Map {
    t: Tensor,
    h: usize,
    w: usize,
}

/// Keys of the constant-tensor cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ConstKey {
    /// Gather indices of a `k`x`k` stride-`s` unfold of `[c, h, w]`.
    Unfold {
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        s: usize,
    },
    /// `[2w, w]` transposed: the `[w, 2w]` horizontal interpolation matrix.
    UpW(usize),
    /// `[c, 2h, h]`: the vertical interpolation matrix repeated per channel.
    UpH(usize, usize),
}

/// Device-resident constants shared by the layers of one network.
#[derive(Debug)]
struct Consts {
    device: Device,
    /// `[1]` one, the upper bound of hard-swish's gate.
    one: Tensor,
    cache: Mutex<HashMap<ConstKey, Tensor>>,
}

impl Consts {
    fn new(device: &Device) -> Result<Self> {
        Ok(Self {
            device: device.clone(),
            one: Tensor::ones(1, DType::F32, device)?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn get(&self, key: ConstKey) -> Result<Tensor> {
        if let Some(t) = self.cache.lock().get(&key) {
            return Ok(t.clone());
        }
        let t = match key {
            ConstKey::Unfold { c, h, w, k, s } => {
                let idx = unfold_indices(c, h, w, k, s);
                let n = idx.len();
                Tensor::from_vec(idx, n, &self.device)?
            }
            ConstKey::UpW(w) => Tensor::from_vec(upsample_matrix(w), (2 * w, w), &self.device)?
                .t()?
                .contiguous()?,
            ConstKey::UpH(c, h) => {
                let m = upsample_matrix(h);
                let rep: Vec<f32> = (0..c).flat_map(|_| m.iter().copied()).collect();
                Tensor::from_vec(rep, (c, 2 * h, h), &self.device)?
            }
        };
        self.cache.lock().insert(key, t.clone());
        Ok(t)
    }

    /// `act(x)` for a tensor of any shape.
    fn activate(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match act {
            Activation::None => Ok(x.clone()),
            Activation::Relu => count(1, x.relu()),
            Activation::Sigmoid => count(1, candle_nn::ops::sigmoid(x)),
            Activation::HardSwish => {
                // x * relu6(x + 3) / 6 = x * min(relu(x / 6 + 1/2), 1)
                let g = x
                    .affine(1.0 / 6.0, 0.5)?
                    .relu()?
                    .broadcast_minimum(&self.one)?;
                count(4, x * g)
            }
        }
    }

    /// `[C, H*W]` -> the zero-padded patches `[C, T, Ho*Wo]` of a `k`x`k` stride-`s`
    /// window with TensorFlow SAME padding, `T = (s * ceil(k / s))^2` taps in the order of
    /// [`tap_weights`] (stride 2 adds taps outside the kernel that get zero weight).
    ///
    /// Two operations: a gather writes the padded map split into its `s`x`s` stride phases
    /// (padding reads index `u32::MAX`, which candle's `index_select` turns into 0 on every
    /// device), then one copy materialises the overlapping window view (`Tensor::unfold`),
    /// whose innermost runs are whole output rows.
    fn unfold(&self, x: &Map, k: usize, s: usize) -> Result<(Tensor, usize, usize)> {
        let c = x.t.dim(0)?;
        let (ho, wo) = (x.h.div_ceil(s), x.w.div_ceil(s));
        let q = k.div_ceil(s);
        let (hq, wq) = (ho + q - 1, wo + q - 1);
        let idx = self.get(ConstKey::Unfold {
            c,
            h: x.h,
            w: x.w,
            k,
            s,
        })?;
        let phases = count(1, x.t.flatten_all()?.index_select(&idx, 0))?;
        let windows = phases
            .reshape((c, s, s, hq, wq))?
            .unfold(3, ho, 1)? // [c, a, b, q, wq, ho]
            .unfold(4, wo, 1)? // [c, a, b, q, r, ho, wo]
            .permute(vec![0, 1, 3, 2, 4, 5, 6])?; // [c, a, q, b, r, ho, wo]
        let patches = count(1, windows.contiguous())?;
        Ok((patches.reshape((c, (s * q) * (s * q), ho * wo))?, ho, wo))
    }

    /// Bilinear 2x upsampling with half-pixel centres: `[C, H*W]` -> `[C, 4*H*W]`.
    fn upsample2x(&self, x: &Map) -> Result<Map> {
        let c = x.t.dim(0)?;
        let (h, w) = (x.h, x.w);
        let up_w = self.get(ConstKey::UpW(w))?;
        let up_h = self.get(ConstKey::UpH(c, h))?;
        let y = count(1, x.t.reshape((c * h, w))?.matmul(&up_w))?; // [C*H, 2W]
        let y = count(1, up_h.matmul(&y.reshape((c, h, 2 * w))?))?; // [C, 2H, 2W]
        Ok(Map {
            t: y.reshape((c, 4 * h * w))?,
            h: 2 * h,
            w: 2 * w,
        })
    }
}

/// Gather indices that write a `[c, h, w]` map zero-padded (TensorFlow SAME for a `k`x`k`
/// stride-`s` window) and split into stride phases: `[c, s, s, hq, wq]` with
/// `out[c, a, b, i, j] = x[c, s*i + a - top, s*j + b - left]`, `hq = ceil(h/s) + ceil(k/s) - 1`
/// (likewise `wq`); padding positions hold `u32::MAX` (read as zero).
fn unfold_indices(c: usize, h: usize, w: usize, k: usize, s: usize) -> Vec<u32> {
    let (ho, wo) = (h.div_ceil(s), w.div_ceil(s));
    let q = k.div_ceil(s);
    let (hq, wq) = (ho + q - 1, wo + q - 1);
    let (pt, _) = same_padding(h, k, s);
    let (pl, _) = same_padding(w, k, s);
    let mut idx = Vec::with_capacity(c * s * s * hq * wq);
    for ch in 0..c {
        for a in 0..s {
            for b in 0..s {
                for i in 0..hq {
                    let iy = (s * i + a) as isize - pt as isize;
                    for j in 0..wq {
                        let ix = (s * j + b) as isize - pl as isize;
                        idx.push(
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                u32::MAX
                            } else {
                                (ch * h * w + iy as usize * w + ix as usize) as u32
                            },
                        );
                    }
                }
            }
        }
    }
    idx
}

/// Convolution weights `[cout, cin, k, k]` rearranged for [`Consts::unfold`]'s taps:
/// `[cout, cin, T]` with tap `t = (a*Q + q) * s*Q + (b*Q + r)` holding `w[.., s*q + a, s*r + b]`
/// (`Q = ceil(k/s)`), zero where that is outside the kernel. For `s = 1`, `t = dy * k + dx`.
fn tap_weights(w: &Tensor, s: usize) -> Result<Tensor> {
    let (cout, cin, k, _) = w.dims4()?;
    let q = k.div_ceil(s);
    let n = s * q;
    let src = w.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; cout * cin * n * n];
    for (plane, taps) in src.chunks_exact(k * k).zip(out.chunks_exact_mut(n * n)) {
        for a in 0..s {
            for qy in 0..q {
                for b in 0..s {
                    for r in 0..q {
                        let (dy, dx) = (s * qy + a, s * r + b);
                        if dy < k && dx < k {
                            taps[(a * q + qy) * n + b * q + r] = plane[dy * k + dx];
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (cout, cin, n * n), w.device())
}

/// The `[2n, n]` row-major matrix of 2x bilinear upsampling along one axis with half-pixel
/// centres and edge clamping (TFLite `RESIZE_BILINEAR`, `half_pixel_centers = true`): output
/// `2i` is `0.75 x[i] + 0.25 x[i-1]`, output `2i+1` is `0.75 x[i] + 0.25 x[i+1]`, indices
/// clamped to `0..n`.
pub(crate) fn upsample_matrix(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; 2 * n * n];
    for i in 0..n {
        m[2 * i * n + i] += 0.75;
        m[2 * i * n + i.saturating_sub(1)] += 0.25;
        m[(2 * i + 1) * n + i] += 0.75;
        m[(2 * i + 1) * n + (i + 1).min(n - 1)] += 0.25;
    }
    m
}

/// A 1x1 convolution: `[Cout, Cin] x [Cin, H*W]`, bias, activation.
#[derive(Clone, Debug)]
struct Pointwise {
    /// `[cout, cin]`.
    weight: Tensor,
    /// `[cout, 1]`.
    bias: Tensor,
    activation: Activation,
}

impl Pointwise {
    fn new(cin: usize, cout: usize, activation: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((cout, cin, 1, 1), "weight")?.reshape((cout, cin))?,
            bias: vb.get(cout, "bias")?.reshape((cout, 1))?,
            activation,
        })
    }

    /// `[Cin, N]` -> `[Cout, N]` (`N` pixels, or 1 for a gate on channel means).
    fn forward(&self, k: &Consts, x: &Tensor) -> Result<Tensor> {
        let y = count(1, self.weight.matmul(x))?;
        let y = count(1, y.broadcast_add(&self.bias))?;
        k.activate(&y, self.activation)
    }

    fn map(&self, k: &Consts, x: &Map) -> Result<Map> {
        Ok(Map {
            t: self.forward(k, &x.t)?,
            ..*x
        })
    }
}

/// A depthwise `k`x`k` convolution with SAME padding, bias and activation: one gather and one
/// batched matmul.
#[derive(Clone, Debug)]
struct Depthwise {
    /// `[c, 1, T]`, see [`tap_weights`].
    weight: Tensor,
    /// `[c, 1]`.
    bias: Tensor,
    kernel: usize,
    stride: usize,
    activation: Activation,
}

impl Depthwise {
    fn new(
        c: usize,
        kernel: usize,
        stride: usize,
        activation: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: tap_weights(&vb.get((c, 1, kernel, kernel), "weight")?, stride)?,
            bias: vb.get(c, "bias")?.reshape((c, 1))?,
            kernel,
            stride,
            activation,
        })
    }

    fn forward(&self, k: &Consts, x: &Map) -> Result<Map> {
        let c = x.t.dim(0)?;
        let (patches, h, w) = k.unfold(x, self.kernel, self.stride)?;
        let y = count(1, self.weight.matmul(&patches))?.reshape((c, h * w))?;
        let y = count(1, y.broadcast_add(&self.bias))?;
        Ok(Map {
            t: k.activate(&y, self.activation)?,
            h,
            w,
        })
    }
}

/// Channel means `[C, H*W]` -> `[C, 1]`.
fn channel_means(x: &Map) -> Result<Tensor> {
    count(2, x.t.mean_keepdim(1))
}

/// Squeeze-and-excitation: `[C, 1]` channel means -> `[C, 1]` gate in 0..1.
#[derive(Clone, Debug)]
struct Gate {
    reduce: Pointwise,
    expand: Pointwise,
}

impl Gate {
    fn new(c: usize, reduced: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            reduce: Pointwise::new(c, reduced, Activation::Relu, vb.pp("reduce"))?,
            expand: Pointwise::new(reduced, c, Activation::Sigmoid, vb.pp("expand"))?,
        })
    }

    fn forward(&self, k: &Consts, means: &Tensor) -> Result<Tensor> {
        self.expand.forward(k, &self.reduce.forward(k, means)?)
    }
}

#[derive(Clone, Debug)]
struct Block {
    expand: Pointwise,
    dw: Depthwise,
    se: Option<Gate>,
    project: Pointwise,
    residual: bool,
}

impl Block {
    fn forward(&self, k: &Consts, x: &Map) -> Result<Map> {
        let mut y = self.dw.forward(k, &self.expand.map(k, x)?)?;
        if let Some(se) = &self.se {
            let g = se.forward(k, &channel_means(&y)?)?;
            y.t = count(1, y.t.broadcast_mul(&g))?;
        }
        let mut y = self.project.map(k, &y)?;
        if self.residual {
            y.t = count(1, &y.t + &x.t)?;
        }
        Ok(y)
    }
}

#[derive(Clone, Debug)]
struct Decoder {
    proj: Pointwise,
    gate: Gate,
    conv: Pointwise,
    dw: Depthwise,
}

impl Decoder {
    /// `x` `[cin, h*w]`, `skip` `[c, 4*h*w]` -> `[c, 4*h*w]`. The projection runs before the
    /// upsampling (both linear, bilinear weights sum to 1: the same function on 4x fewer
    /// pixels).
    fn forward(&self, k: &Consts, x: &Map, skip: &Map) -> Result<Map> {
        let up = k.upsample2x(&self.proj.map(k, x)?)?;
        let sum = count(1, &skip.t + &up.t)?;
        let g = self
            .gate
            .forward(k, &channel_means(&Map { t: sum, ..*skip })?)?;
        let merged = count(1, skip.t.broadcast_mul(&g))?;
        let merged = Map {
            t: count(1, merged + up.t)?,
            ..*skip
        };
        let c = self.conv.map(k, &merged)?;
        let d = self.dw.forward(k, &c)?;
        Ok(Map {
            t: count(1, c.t + d.t)?,
            ..c
        })
    }
}

/// The selfie-segmentation network in portable candle ops: `[1, 3, H, W]` RGB 0..1 ->
/// `[1, 1, H, W]` person probability, `H` and `W` multiples of 16. Same weights and keys as
/// [`super::net::SelfieSegmentation`].
#[derive(Debug)]
pub struct PortableNet {
    consts: Consts,
    /// Stem `[16, 3 * 16]` (input channel, then the 16 taps of [`tap_weights`] for a 3x3
    /// stride-2 window) and bias `[16, 1]`.
    stem: (Tensor, Tensor),
    blocks: Vec<Block>,
    head_conv: Pointwise,
    head_gate: Pointwise,
    decoder: [Decoder; 3],
    /// `[4, 16]`: row `dy * 2 + dx` holds the taps for output offset `(dy, dx)`; bias `[1]`.
    output: (Tensor, Tensor),
}

impl PortableNet {
    /// Builds the network from `vb` (keys as written by `tools/convert_tflite.py`) on `device`.
    ///
    /// # Errors
    /// When a weight is missing or has the wrong shape.
    pub fn new(vb: VarBuilder, device: &Device) -> Result<Self> {
        let blocks = BLOCKS
            .iter()
            .enumerate()
            .map(|(i, cfg)| {
                let vb = vb.pp("blocks").pp(i);
                Ok(Block {
                    expand: Pointwise::new(cfg.cin, cfg.expanded, cfg.activation, vb.pp("expand"))?,
                    dw: Depthwise::new(
                        cfg.expanded,
                        cfg.kernel,
                        cfg.stride,
                        cfg.activation,
                        vb.pp("dw"),
                    )?,
                    se: match cfg.se {
                        Some(r) => Some(Gate::new(cfg.expanded, r, vb.pp("se"))?),
                        None => None,
                    },
                    project: Pointwise::new(
                        cfg.expanded,
                        cfg.cout,
                        Activation::None,
                        vb.pp("project"),
                    )?,
                    residual: cfg.residual(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let d = vb.pp("decoder");
        let decoder = |i: usize, cin: usize, c: usize| -> Result<Decoder> {
            let vb = d.pp(i);
            Ok(Decoder {
                proj: Pointwise::new(cin, c, Activation::None, vb.pp("proj"))?,
                gate: Gate::new(c, c, vb.pp("gate"))?,
                conv: Pointwise::new(c, c, Activation::Relu, vb.pp("conv"))?,
                dw: Depthwise::new(c, 3, 1, Activation::Relu, vb.pp("dw"))?,
            })
        };
        let head = vb.pp("head");
        let stem = vb.pp("stem");
        let out = vb.pp("final");
        Ok(Self {
            consts: Consts::new(device)?,
            stem: (
                tap_weights(&stem.get((16, 3, 3, 3), "weight")?, 2)?.reshape((16, 48))?,
                stem.get(16, "bias")?.reshape((16, 1))?,
            ),
            blocks,
            head_conv: Pointwise::new(32, 128, Activation::Relu, head.pp("conv"))?,
            head_gate: Pointwise::new(32, 128, Activation::Sigmoid, head.pp("gate"))?,
            decoder: [
                decoder(0, 128, 24)?,
                decoder(1, 24, 16)?,
                decoder(2, 16, 16)?,
            ],
            output: (
                out.get((16, 1, 2, 2), "weight")?
                    .reshape((16, 4))?
                    .t()?
                    .contiguous()?,
                out.get(1, "bias")?,
            ),
        })
    }
}

impl Module for PortableNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = &self.consts;
        let (n, c, h, w) = x.dims4()?;
        if n != 1 || c != 3 || h % 16 != 0 || w % 16 != 0 {
            candle_core::bail!(
                "expected [1, 3, H, W] with H, W multiples of 16, got {n}x{c}x{h}x{w}"
            );
        }
        let x = Map {
            t: x.reshape((3, h * w))?,
            h,
            w,
        };
        // Stem: dense 3x3 stride 2 as unfold + one matmul.
        let (patches, sh, sw) = k.unfold(&x, 3, 2)?;
        let y = count(1, self.stem.0.matmul(&patches.reshape((48, sh * sw))?))?;
        let y = count(1, y.broadcast_add(&self.stem.1))?;
        let s2 = Map {
            t: k.activate(&y, Activation::HardSwish)?,
            h: sh,
            w: sw,
        };
        let s4 = self.blocks[0].forward(k, &s2)?;
        let y = self.blocks[1].forward(k, &s4)?;
        let s8 = self.blocks[2].forward(k, &y)?;
        let mut y = s8.clone();
        for block in &self.blocks[3..] {
            y = block.forward(k, &y)?;
        }
        // Head: relu(conv(y)) * sigmoid(gate(mean(y))).
        let g = self.head_gate.forward(k, &channel_means(&y)?)?;
        let mut y = self.head_conv.map(k, &y)?;
        y.t = count(1, y.t.broadcast_mul(&g))?;
        let y = self.decoder[0].forward(k, &y, &s8)?;
        let y = self.decoder[1].forward(k, &y, &s4)?;
        let y = self.decoder[2].forward(k, &y, &s2)?;
        // Output: 2x2 stride-2 transposed conv as a 1x1 conv to 4 channels + depth-to-space.
        let (oh, ow) = (y.h, y.w);
        let z = count(1, self.output.0.matmul(&y.t))?; // [4, h*w]
        let z = count(1, z.broadcast_add(&self.output.1))?;
        let z = count(1, candle_nn::ops::sigmoid(&z))?;
        count(
            1,
            z.reshape((2, 2, oh, ow))?
                .permute((2, 0, 3, 1))? // [h, dy, w, dx]
                .contiguous(),
        )?
        .reshape((1, 1, 2 * oh, 2 * ow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsample_rows_sum_to_one_and_clamp() {
        let m = upsample_matrix(3);
        for row in m.chunks_exact(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-7);
        }
        assert_eq!(&m[..3], &[1.0, 0.0, 0.0]); // output 0 clamps to input 0
        assert_eq!(&m[3..6], &[0.75, 0.25, 0.0]);
    }

    /// The unfold (gather, window copy) and tap weights reproduce a direct SAME convolution,
    /// for both strides and kernel sizes, on odd and even sizes.
    #[test]
    fn unfold_matches_direct_depthwise_convolution() {
        let device = Device::Cpu;
        let consts = Consts::new(&device).unwrap();
        for (h, w, k, s) in [(6, 8, 3, 1), (8, 6, 3, 2), (9, 10, 5, 1), (10, 12, 5, 2)] {
            let c = 2;
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| ((i * 37) % 11) as f32 - 5.0)
                .collect();
            let kw: Vec<f32> = (0..c * k * k)
                .map(|i| ((i * 13) % 7) as f32 - 3.0)
                .collect();
            let (pt, _) = same_padding(h, k, s);
            let (pl, _) = same_padding(w, k, s);
            let (ho, wo) = (h.div_ceil(s), w.div_ceil(s));
            let mut want = vec![0f32; c * ho * wo];
            for ch in 0..c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0.0;
                        for dy in 0..k {
                            for dx in 0..k {
                                let iy = (oy * s + dy) as isize - pt as isize;
                                let ix = (ox * s + dx) as isize - pl as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc += x[ch * h * w + iy as usize * w + ix as usize]
                                        * kw[ch * k * k + dy * k + dx];
                                }
                            }
                        }
                        want[ch * ho * wo + oy * wo + ox] = acc;
                    }
                }
            }
            let map = Map {
                t: Tensor::from_vec(x, (c, h * w), &device).unwrap(),
                h,
                w,
            };
            let (patches, gh, gw) = consts.unfold(&map, k, s).unwrap();
            assert_eq!((gh, gw), (ho, wo));
            let wt = tap_weights(&Tensor::from_vec(kw, (c, 1, k, k), &device).unwrap(), s);
            let got = wt.unwrap().matmul(&patches).unwrap().flatten_all().unwrap();
            assert_eq!(got.to_vec1::<f32>().unwrap(), want, "{h}x{w} k{k} s{s}");
        }
    }
}
