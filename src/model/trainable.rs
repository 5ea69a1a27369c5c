//! The network in its training form: the same function as [`super::net`] and
//! [`super::portable`] on a batch, built only from candle operations that have a backward pass
//! in candle 0.11.1, with the weights as [`Var`]s under the keys and shapes of
//! `models/*.safetensors`.
//!
//! What of the portable path is differentiable and what is not (candle 0.11.1):
//! - `Tensor::unfold` records its result as a `Reshape` of its input, so backprop tries to
//!   reshape the (larger) window gradient back and fails: the window view cannot be trained
//!   through. Here one `index_select` gathers the zero-padded windows directly (padding reads
//!   index `u32::MAX`, which `index_select` reads as zero and whose backward, `index_add`,
//!   skips);
//! - `tap_weights` rearranges the weights on the host (`to_vec1`), which cuts the graph. Here
//!   the taps are the plain `k*k` kernel (`reshape` only), since the gather follows the stride;
//! - everything else (`matmul`, broadcast arithmetic, `relu`, `mean`, `sigmoid`, `permute`,
//!   `contiguous`) has a backward pass. Hard-swish is written as `x * (relu(x/6 + 1/2) -
//!   relu(x/6 - 1/2))` (equal to `x * min(relu(x/6 + 1/2), 1)`) to stay on `relu`;
//! - not used: `upsample_bilinear2d` (no backward; the half-pixel 2x upsampling is two matmuls
//!   with fixed `[2W, W]` and `[2H, H]` matrices), padded `conv2d` (backward only for
//!   symmetric padding; TensorFlow SAME at stride 2 is asymmetric), grouped `conv2d` (backward
//!   runs per channel, very slow).
//!
//! Feature maps are `[C, N*H*W]` (channel-major, then image, row, column), so every 1x1
//! convolution of the batch is one `[Cout, Cin] x [Cin, N*H*W]` matmul. Depthwise ones run
//! through the direct CPU op [`DepthwiseOp`] on the CPU and elsewhere as `k*k` shifted
//! multiply-adds ([`depthwise_shifted`]); the gather form ([`depthwise_gather`]: one gather
//! plus one batched `[C, 1, k*k] x [C, k*k, N*Ho*Wo]` matmul) is kept as a reference, its
//! backward being one CUDA thread for the whole map in candle 0.11.1.
//!
//! [`TrainableNet::logits`] returns the pre-sigmoid output (the losses need it; this model's
//! logits reach +-300, where `sigmoid` then `log` overflows).

use super::kernels::{same_padding, source, Activation, DepthwiseConv};
use super::net::BLOCKS;
use super::portable::upsample_matrix;
use super::Preset;
use crate::simd::simd;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, Var};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

/// Keys of the constant-tensor cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ConstKey {
    /// Gather indices of `k`x`k` stride-`s` SAME windows of `[c, n, h, w]`.
    Windows {
        c: usize,
        n: usize,
        h: usize,
        w: usize,
        k: usize,
        s: usize,
    },
    /// `[w, 2w]`: horizontal interpolation matrix.
    UpW(usize),
    /// `[b, 2h, h]`: vertical interpolation matrix repeated `b` times.
    UpH(usize, usize),
}

/// A feature map: `t` is `[C, N*H*W]`.
#[derive(Clone, Debug)]
struct Map {
    t: Tensor,
    n: usize,
    h: usize,
    w: usize,
}

/// The selfie-segmentation network with trainable weights; see the module doc.
#[derive(Debug)]
pub struct TrainableNet {
    device: Device,
    vars: BTreeMap<String, Var>,
    cache: Mutex<HashMap<ConstKey, Tensor>>,
    /// Depthwise convolutions through [`DepthwiseOp`] (CPU) rather than the shifted form.
    direct: bool,
}

/// `[c, T, n*ho*wo]` gather indices into a flattened `[c, n, h, w]` map: tap `t = dy*k + dx`
/// of output `(oy, ox)` reads `(s*oy + dy - top, s*ox + dx - left)` (TensorFlow SAME padding,
/// [`same_padding`]); outside the map, `u32::MAX` (read as zero).
fn window_indices(c: usize, n: usize, h: usize, w: usize, k: usize, s: usize) -> Vec<u32> {
    let (ho, wo) = (h.div_ceil(s), w.div_ceil(s));
    let (pt, _) = same_padding(h, k, s);
    let (pl, _) = same_padding(w, k, s);
    let mut idx = Vec::with_capacity(c * k * k * n * ho * wo);
    for ch in 0..c {
        for dy in 0..k {
            for dx in 0..k {
                for img in 0..n {
                    let base = (ch * n + img) * h * w;
                    for oy in 0..ho {
                        let iy = (s * oy + dy) as isize - pt as isize;
                        for ox in 0..wo {
                            let ix = (s * ox + dx) as isize - pl as isize;
                            idx.push(
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    u32::MAX
                                } else {
                                    (base + iy as usize * w + ix as usize) as u32
                                },
                            );
                        }
                    }
                }
            }
        }
    }
    idx
}

/// Geometry of a depthwise convolution on a `[C, N*H*W]` feature map (channel-major, then
/// image, row, column): `n` images of `h`x`w` pixels, a `k`x`k` kernel, stride `s` (pixels),
/// TensorFlow SAME padding ([`same_padding`]); the output is `[C, N*Ho*Wo]` with
/// `Ho = ceil(h / s)`, `Wo = ceil(w / s)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DepthwiseGeometry {
    /// Images in the batch.
    pub n: usize,
    /// Input height in pixels.
    pub h: usize,
    /// Input width in pixels.
    pub w: usize,
    /// Kernel size in pixels.
    pub k: usize,
    /// Stride in pixels.
    pub s: usize,
}

impl DepthwiseGeometry {
    /// Output height and width `(Ho, Wo)`.
    pub fn output(&self) -> (usize, usize) {
        (self.h.div_ceil(self.s), self.w.div_ceil(self.s))
    }

    /// The zero-padded plane `(Hp, Wp, top, left)`: SAME padding, with room for every window.
    fn padded(&self) -> (usize, usize, usize, usize) {
        let (pt, pb) = same_padding(self.h, self.k, self.s);
        let (pl, pr) = same_padding(self.w, self.k, self.s);
        (self.h + pt + pb, self.w + pl + pr, pt, pl)
    }

    /// Checks `x` `[C, N*H*W]` against `weight` `[C, k*k]`; returns `C`.
    fn channels(&self, x: &Layout, weight: &Layout) -> Result<usize> {
        let (c, len) = x.shape().dims2()?;
        let (cw, taps) = weight.shape().dims2()?;
        if len != self.n * self.h * self.w || cw != c || taps != self.k * self.k {
            candle_core::bail!(
                "depthwise: input {:?} and weight {:?} do not fit {self:?}",
                x.shape(),
                weight.shape()
            );
        }
        Ok(c)
    }
}

/// Runs `f(channel, out_chunk)` over the `c` equal chunks of `out`, split over rayon's
/// threads (`RAYON_NUM_THREADS`), each under [`simd`].
fn par_channels<F>(out: &mut [f32], c: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    use rayon::prelude::*;
    let len = out.len() / c.max(1);
    out.par_chunks_mut(len.max(1))
        .enumerate()
        .for_each(|(ch, o)| simd(|| f(ch, o)));
}

/// `out` (`Hp*Wp`, zeroed first) = `plane` (`h*w`) zero-padded by `top` rows and `left`
/// columns.
#[inline(always)]
fn pad_plane(plane: &[f32], g: &DepthwiseGeometry, out: &mut Vec<f32>) {
    let (hp, wp, pt, pl) = g.padded();
    out.clear();
    out.resize(hp * wp, 0.0);
    for (y, row) in plane.chunks_exact(g.w).enumerate() {
        out[(y + pt) * wp + pl..(y + pt) * wp + pl + g.w].copy_from_slice(row);
    }
}

/// `sum(a[i] * b[i * step])` over `a`, in 8 lanes (so it vectorises for `step` 1).
#[inline(always)]
fn strided_dot(a: &[f32], b: &[f32], step: usize) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    if step == 1 {
        for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += ca[l] * cb[l];
            }
        }
    } else {
        for (i, ca) in a.chunks_exact(8).enumerate() {
            for l in 0..8 {
                acc[l] += ca[l] * b[(i * 8 + l) * step];
            }
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i * step];
    }
    sum
}

/// The depthwise convolution as a candle op on the CPU: `(x [C, N*H*W], weight [C, k*k])` ->
/// `[C, N*Ho*Wo]`, no bias. Forward runs the inference kernel ([`DepthwiseConv::run_plane`])
/// on every plane; backward is [`DepthwiseGradInput`] (the transposed convolution) and
/// [`DepthwiseGradWeight`] (window-gradient products summed over images and pixels).
/// Channels are split over rayon's threads.
#[derive(Clone, Copy, Debug)]
struct DepthwiseOp(DepthwiseGeometry);

impl CustomOp2 for DepthwiseOp {
    fn name(&self) -> &'static str {
        "trainable-depthwise"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let c = g.channels(l1, l2)?;
        let (k, plane) = (g.k, g.h * g.w);
        let x = source(s1, l1, c * g.n * plane)?;
        let weight = source(s2, l2, c * k * k)?;
        let (ho, wo) = g.output();
        let conv = DepthwiseConv {
            weight: weight.to_vec(),
            bias: vec![0.0; c],
            kernel: k,
            stride: g.s,
            activation: Activation::None,
            residual: false,
        };
        let mut out = vec![0f32; c * g.n * ho * wo];
        par_channels(
            &mut out,
            c,
            #[inline(always)]
            |ch, o| {
                let mut scratch = Vec::new();
                for (img, o) in o.chunks_exact_mut(ho * wo).enumerate() {
                    let p = &x[(ch * g.n + img) * plane..(ch * g.n + img + 1) * plane];
                    conv.run_plane(ch, p, g.h, g.w, o, &mut scratch);
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((c, g.n * ho * wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = grad.apply_op2_no_bwd(weight, &DepthwiseGradInput(self.0))?;
        let gw = x.apply_op2_no_bwd(&grad, &DepthwiseGradWeight(self.0))?;
        Ok((Some(gx), Some(gw)))
    }
}

/// Gradient of [`DepthwiseOp`] with respect to its input: `(grad [C, N*Ho*Wo], weight
/// [C, k*k])` -> `[C, N*H*W]`, the transposed convolution: every output gradient is spread
/// over its window (stride and SAME padding as the forward), padding cropped.
#[derive(Clone, Copy, Debug)]
struct DepthwiseGradInput(DepthwiseGeometry);

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "trainable-depthwise-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (ho, wo) = g.output();
        let (hp, wp, pt, pl) = g.padded();
        let (c, len) = l1.shape().dims2()?;
        if len != g.n * ho * wo || l2.shape().dims2()? != (c, g.k * g.k) {
            candle_core::bail!("depthwise grad: {:?} does not fit {g:?}", l1.shape());
        }
        let grad = source(s1, l1, c * len)?;
        let weight = source(s2, l2, c * g.k * g.k)?;
        let (k, s, plane) = (g.k, g.s, g.h * g.w);
        let mut out = vec![0f32; c * g.n * plane];
        par_channels(
            &mut out,
            c,
            #[inline(always)]
            |ch, o| {
                let taps = &weight[ch * k * k..(ch + 1) * k * k];
                let mut pad = vec![0f32; hp * wp];
                for (img, o) in o.chunks_exact_mut(plane).enumerate() {
                    let gp = &grad[(ch * g.n + img) * ho * wo..(ch * g.n + img + 1) * ho * wo];
                    pad.fill(0.0);
                    for ky in 0..k {
                        for kx in 0..k {
                            let t = taps[ky * k + kx];
                            for oy in 0..ho {
                                let row = &gp[oy * wo..(oy + 1) * wo];
                                let base = (s * oy + ky) * wp + kx;
                                if s == 1 {
                                    let dst = &mut pad[base..base + wo];
                                    for (d, &v) in dst.iter_mut().zip(row) {
                                        *d += t * v;
                                    }
                                } else {
                                    for (ox, &v) in row.iter().enumerate() {
                                        pad[base + s * ox] += t * v;
                                    }
                                }
                            }
                        }
                    }
                    for (y, dst) in o.chunks_exact_mut(g.w).enumerate() {
                        dst.copy_from_slice(&pad[(y + pt) * wp + pl..(y + pt) * wp + pl + g.w]);
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((c, g.n * plane))))
    }
}

/// Gradient of [`DepthwiseOp`] with respect to its weight: `(x [C, N*H*W], grad
/// [C, N*Ho*Wo])` -> `[C, k*k]`, tap `(ky, kx)` of channel `c` = the sum over images and
/// output pixels of the output gradient times the input under that tap (zero padding).
#[derive(Clone, Copy, Debug)]
struct DepthwiseGradWeight(DepthwiseGeometry);

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "trainable-depthwise-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (ho, wo) = g.output();
        let (_, wp, _, _) = g.padded();
        let (c, len) = l1.shape().dims2()?;
        if len != g.n * g.h * g.w || l2.shape().dims2()? != (c, g.n * ho * wo) {
            candle_core::bail!("depthwise grad: {:?} does not fit {g:?}", l1.shape());
        }
        let x = source(s1, l1, c * len)?;
        let grad = source(s2, l2, c * g.n * ho * wo)?;
        let (k, s, plane) = (g.k, g.s, g.h * g.w);
        let mut out = vec![0f32; c * k * k];
        par_channels(
            &mut out,
            c,
            #[inline(always)]
            |ch, taps| {
                let mut pad = Vec::new();
                let mut sums = vec![0f64; k * k];
                for img in 0..g.n {
                    pad_plane(
                        &x[(ch * g.n + img) * plane..(ch * g.n + img + 1) * plane],
                        &g,
                        &mut pad,
                    );
                    let gp = &grad[(ch * g.n + img) * ho * wo..(ch * g.n + img + 1) * ho * wo];
                    for ky in 0..k {
                        for kx in 0..k {
                            let mut sum = 0f32;
                            for oy in 0..ho {
                                let base = (s * oy + ky) * wp + kx;
                                sum += strided_dot(&gp[oy * wo..(oy + 1) * wo], &pad[base..], s);
                            }
                            sums[ky * k + kx] += f64::from(sum);
                        }
                    }
                }
                for (t, &v) in taps.iter_mut().zip(&sums) {
                    *t = v as f32;
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((c, k * k))))
    }
}

/// Depthwise convolution (no bias) of `x` `[C, N*H*W]` with `weight` `[C, k*k]` ->
/// `[C, N*Ho*Wo]`, through the direct CPU op with its own backward pass ([`DepthwiseOp`]).
///
/// # Errors
/// When the shapes do not fit `geo`, or `x` is not an f32 CPU tensor.
pub fn depthwise_direct(x: &Tensor, weight: &Tensor, geo: DepthwiseGeometry) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, DepthwiseOp(geo))
}

/// The same convolution as [`depthwise_direct`] in the portable gather form (one
/// `index_select` of the padded windows and a batched matmul; any device, slow backward).
///
/// # Errors
/// When the shapes do not fit `geo`.
pub fn depthwise_gather(x: &Tensor, weight: &Tensor, geo: DepthwiseGeometry) -> Result<Tensor> {
    let c = x.dim(0)?;
    let DepthwiseGeometry { n, h, w, k, s } = geo;
    let idx = window_indices(c, n, h, w, k, s);
    let len = idx.len();
    gather_conv(x, weight, &Tensor::from_vec(idx, len, x.device())?, geo)
}

/// The same convolution as [`depthwise_direct`] as `k*k` shifted multiply-adds: the map padded
/// with zeros (TensorFlow SAME, [`same_padding`], then up to a multiple of `s`) and viewed as
/// `[C, N, Hp/s, s, Wp/s, s]`, so that tap `(dy, dx)` at stride `s` is a window of phase
/// `(dy % s, dx % s)` starting at `(dy / s, dx / s)`, times its weight `[C, 1]`, summed over
/// the taps. `x` is `[C, N*H*W]`, `weight` `[C, k*k]`, the output `[C, N*Ho*Wo]`.
///
/// Every operation of it and of its backward pass (`pad_with_zeros`, `narrow`, `reshape`,
/// broadcast multiply, add, sum) runs in parallel on a GPU; this is the form the network takes
/// off the CPU. The gather form's backward is `index_add`, which candle-kernels 0.11.1 runs
/// with one CUDA thread per (left, right) position looping over all indices: one thread for
/// the whole flattened map (0.86 s an image on an H200, 4 December, docs/devices.md "On a
/// GPU").
///
/// # Errors
/// When the shapes do not fit `geo`.
pub fn depthwise_shifted(x: &Tensor, weight: &Tensor, geo: DepthwiseGeometry) -> Result<Tensor> {
    let c = x.dim(0)?;
    let DepthwiseGeometry { n, h, w, k, s } = geo;
    let (ho, wo) = geo.output();
    let (pt, _) = same_padding(h, k, s);
    let (pl, _) = same_padding(w, k, s);
    // The taps read padded rows up to s*(ho-1) + k - 1 (= h + both SAME pads - 1).
    let hp = (s * (ho - 1) + k).div_ceil(s) * s;
    let wp = (s * (wo - 1) + k).div_ceil(s) * s;
    let xp = x
        .reshape((c, n, h, w))?
        .pad_with_zeros(2, pt, hp - h - pt)?
        .pad_with_zeros(3, pl, wp - w - pl)?
        .reshape((c, n, hp / s, s, wp / s, s))?;
    let mut y: Option<Tensor> = None;
    for dy in 0..k {
        for dx in 0..k {
            let tap = xp
                .narrow(3, dy % s, 1)?
                .narrow(5, dx % s, 1)?
                .narrow(2, dy / s, ho)?
                .narrow(4, dx / s, wo)?
                .reshape((c, n * ho * wo))?
                .broadcast_mul(&weight.narrow(1, dy * k + dx, 1)?)?;
            y = Some(match y {
                None => tap,
                Some(acc) => (acc + tap)?,
            });
        }
    }
    y.ok_or_else(|| candle_core::Error::Msg("depthwise kernel of size 0".into()))
}

/// The gather form with precomputed [`window_indices`] `idx`.
fn gather_conv(
    x: &Tensor,
    weight: &Tensor,
    idx: &Tensor,
    geo: DepthwiseGeometry,
) -> Result<Tensor> {
    let c = x.dim(0)?;
    let (ho, wo) = geo.output();
    let kk = geo.k * geo.k;
    let patches = x
        .flatten_all()?
        .index_select(idx, 0)?
        .reshape((c, kk, geo.n * ho * wo))?;
    weight
        .reshape((c, 1, kk))?
        .matmul(&patches)?
        .reshape((c, geo.n * ho * wo))
}

impl TrainableNet {
    /// Loads safetensors `bytes` (keys and shapes of `models/*.safetensors`, any float dtype)
    /// as float32 variables on `device`.
    ///
    /// # Errors
    /// When the bytes are not safetensors or a weight the network needs is missing or has
    /// the wrong shape (checked by a forward pass on a 16x16 input).
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
        let vars = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, Var::from_tensor(&t.to_dtype(DType::F32)?)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let net = Self {
            device: device.clone(),
            vars,
            cache: Mutex::new(HashMap::new()),
            direct: device.is_cpu(),
        };
        net.logits(&Tensor::zeros((1, 3, 16, 16), DType::F32, device)?)?;
        Ok(net)
    }

    /// The embedded weights of `preset` as a trainable network.
    ///
    /// # Errors
    /// As [`TrainableNet::from_bytes`].
    pub fn embedded(preset: Preset, device: &Device) -> Result<Self> {
        Self::from_bytes(preset.embedded_weights(), device)
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The variables by safetensors key (sorted), e.g. `blocks.3.dw.weight` `[96, 1, 5, 5]`.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// A snapshot of the current weights (float32, detached), by key.
    ///
    /// # Errors
    /// On a device copy failure.
    pub fn snapshot(&self) -> Result<HashMap<String, Tensor>> {
        self.vars
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?)))
            .collect()
    }

    /// The current weights as safetensors bytes (float32, the embedded weights' keys and
    /// shapes), loadable by [`super::Segmenter::from_bytes`] and `--weights`.
    ///
    /// # Errors
    /// On a device read-back or serialisation failure.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let tensors: Vec<(String, Tensor)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        serialize_weights(&tensors)
    }

    fn p(&self, key: &str) -> Result<Tensor> {
        self.vars
            .get(key)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("missing weight {key}")))
    }

    fn get(&self, key: ConstKey) -> Result<Tensor> {
        if let Some(t) = self.cache.lock().get(&key) {
            return Ok(t.clone());
        }
        let d = &self.device;
        let t = match key {
            ConstKey::Windows { c, n, h, w, k, s } => {
                let idx = window_indices(c, n, h, w, k, s);
                let len = idx.len();
                Tensor::from_vec(idx, len, d)?
            }
            ConstKey::UpW(w) => Tensor::from_vec(upsample_matrix(w), (2 * w, w), d)?
                .t()?
                .contiguous()?,
            ConstKey::UpH(b, h) => {
                let m = upsample_matrix(h);
                let rep: Vec<f32> = (0..b).flat_map(|_| m.iter().copied()).collect();
                Tensor::from_vec(rep, (b, 2 * h, h), d)?
            }
        };
        self.cache.lock().insert(key, t.clone());
        Ok(t)
    }

    /// `[C, N*H*W]` -> the zero-padded `k`x`k` stride-`s` windows `[C, k*k, N*Ho*Wo]`.
    fn windows(&self, x: &Map, k: usize, s: usize) -> Result<(Tensor, usize, usize)> {
        let c = x.t.dim(0)?;
        let (ho, wo) = (x.h.div_ceil(s), x.w.div_ceil(s));
        let idx = self.get(ConstKey::Windows {
            c,
            n: x.n,
            h: x.h,
            w: x.w,
            k,
            s,
        })?;
        let p = x.t.flatten_all()?.index_select(&idx, 0)?;
        Ok((p.reshape((c, k * k, x.n * ho * wo))?, ho, wo))
    }

    fn pointwise(&self, prefix: &str, x: &Tensor, act: Activation) -> Result<Tensor> {
        let w = self.p(&format!("{prefix}.weight"))?;
        let (cout, cin) = (w.dim(0)?, w.dim(1)?);
        let b = self.p(&format!("{prefix}.bias"))?.reshape((cout, 1))?;
        let y = w.reshape((cout, cin))?.matmul(x)?.broadcast_add(&b)?;
        activate(&y, act)
    }

    fn depthwise(&self, prefix: &str, x: &Map, k: usize, s: usize, act: Activation) -> Result<Map> {
        let c = x.t.dim(0)?;
        let geo = DepthwiseGeometry {
            n: x.n,
            h: x.h,
            w: x.w,
            k,
            s,
        };
        let (ho, wo) = geo.output();
        let w = self.p(&format!("{prefix}.weight"))?.reshape((c, k * k))?;
        let y = if self.direct {
            depthwise_direct(&x.t, &w, geo)?
        } else {
            depthwise_shifted(&x.t, &w, geo)?
        };
        let b = self.p(&format!("{prefix}.bias"))?.reshape((c, 1))?;
        Ok(Map {
            t: activate(&y.broadcast_add(&b)?, act)?,
            n: x.n,
            h: ho,
            w: wo,
        })
    }

    /// Runs the depthwise convolutions through the direct CPU op (`true`, the default on the
    /// CPU) or the portable shifted form ([`depthwise_shifted`]; `false`, the only one on
    /// other devices).
    ///
    /// # Errors
    /// `true` on a device other than the CPU.
    pub fn set_direct_depthwise(&mut self, direct: bool) -> Result<()> {
        if direct && !self.device.is_cpu() {
            candle_core::bail!("the direct depthwise op runs on the CPU only");
        }
        self.direct = direct;
        Ok(())
    }

    /// Squeeze-excite style gate on channel means: `[C, N]` -> `[C, N]` in 0..1.
    fn gate(&self, prefix: &str, means: &Tensor) -> Result<Tensor> {
        let r = self.pointwise(&format!("{prefix}.reduce"), means, Activation::Relu)?;
        self.pointwise(&format!("{prefix}.expand"), &r, Activation::Sigmoid)
    }

    fn upsample2x(&self, x: &Map) -> Result<Map> {
        let c = x.t.dim(0)?;
        let (b, h, w) = (c * x.n, x.h, x.w);
        let y =
            x.t.reshape((b * h, w))?
                .matmul(&self.get(ConstKey::UpW(w))?)?;
        let y = self
            .get(ConstKey::UpH(b, h))?
            .matmul(&y.reshape((b, h, 2 * w))?)?;
        Ok(Map {
            t: y.reshape((c, x.n * 4 * h * w))?,
            n: x.n,
            h: 2 * h,
            w: 2 * w,
        })
    }

    fn block(&self, i: usize, x: &Map) -> Result<Map> {
        let cfg = &BLOCKS[i];
        let pre = format!("blocks.{i}");
        let e = Map {
            t: self.pointwise(&format!("{pre}.expand"), &x.t, cfg.activation)?,
            ..x.clone()
        };
        let mut y = self.depthwise(
            &format!("{pre}.dw"),
            &e,
            cfg.kernel,
            cfg.stride,
            cfg.activation,
        )?;
        if cfg.se.is_some() {
            let g = self.gate(&format!("{pre}.se"), &channel_means(&y)?)?;
            y.t = gate_mul(&y, &g)?;
        }
        let mut out = Map {
            t: self.pointwise(&format!("{pre}.project"), &y.t, Activation::None)?,
            ..y
        };
        if cfg.residual() {
            out.t = (&out.t + &x.t)?;
        }
        Ok(out)
    }

    fn decoder(&self, i: usize, x: &Map, skip: &Map) -> Result<Map> {
        let pre = format!("decoder.{i}");
        let proj = Map {
            t: self.pointwise(&format!("{pre}.proj"), &x.t, Activation::None)?,
            ..x.clone()
        };
        let up = self.upsample2x(&proj)?;
        let sum = Map {
            t: (&skip.t + &up.t)?,
            ..skip.clone()
        };
        let g = self.gate(&format!("{pre}.gate"), &channel_means(&sum)?)?;
        let merged = (gate_mul(skip, &g)? + &up.t)?;
        let c = Map {
            t: self.pointwise(&format!("{pre}.conv"), &merged, Activation::Relu)?,
            ..skip.clone()
        };
        let d = self.depthwise(&format!("{pre}.dw"), &c, 3, 1, Activation::Relu)?;
        Ok(Map {
            t: (&c.t + d.t)?,
            ..c
        })
    }

    /// The network's pre-sigmoid output: `[N, 3, H, W]` RGB 0..1 -> `[N, 1, H, W]` logits
    /// (`H`, `W` multiples of 16). `sigmoid` of it is [`super::Segmenter::forward`]'s
    /// probability.
    ///
    /// # Errors
    /// On a wrong input shape, a missing or misshapen weight, or a device failure.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != 3 || h % 16 != 0 || w % 16 != 0 {
            candle_core::bail!(
                "expected [N, 3, H, W] with H, W multiples of 16, got {n}x{c}x{h}x{w}"
            );
        }
        let x = Map {
            t: x.permute((1, 0, 2, 3))?
                .contiguous()?
                .reshape((3, n * h * w))?,
            n,
            h,
            w,
        };
        // Stem: dense 3x3 stride 2: windows of the 3 channels, one matmul [16, 27].
        let (patches, sh, sw) = self.windows(&x, 3, 2)?;
        let sp = self.p("stem.weight")?.reshape((16, 27))?;
        let y = sp
            .matmul(&patches.reshape((27, n * sh * sw))?)?
            .broadcast_add(&self.p("stem.bias")?.reshape((16, 1))?)?;
        let s2 = Map {
            t: activate(&y, Activation::HardSwish)?,
            n,
            h: sh,
            w: sw,
        };
        let s4 = self.block(0, &s2)?;
        let y = self.block(1, &s4)?;
        let s8 = self.block(2, &y)?;
        let mut y = s8.clone();
        for i in 3..BLOCKS.len() {
            y = self.block(i, &y)?;
        }
        // Head: relu(conv(y)) * sigmoid(gate(mean(y))).
        let g = self.pointwise("head.gate", &channel_means(&y)?, Activation::Sigmoid)?;
        let y = Map {
            t: self.pointwise("head.conv", &y.t, Activation::Relu)?,
            ..y
        };
        let y = Map {
            t: gate_mul(&y, &g)?,
            ..y
        };
        let y = self.decoder(0, &y, &s8)?;
        let y = self.decoder(1, &y, &s4)?;
        let y = self.decoder(2, &y, &s2)?;
        // Output: 2x2 stride-2 transposed conv = 1x1 to 4 channels + depth-to-space.
        let fw = self.p("final.weight")?.reshape((16, 4))?.t()?;
        let z = fw
            .matmul(&y.t)?
            .broadcast_add(&self.p("final.bias")?.reshape((1, 1))?)?; // [4, n*h*w]
        z.reshape((2, 2, n, y.h, y.w))?
            .permute((2, 3, 0, 4, 1))? // [n, h, dy, w, dx]
            .contiguous()?
            .reshape((n, 1, 2 * y.h, 2 * y.w))
    }
}

fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::None => Ok(x.clone()),
        Activation::Relu => x.relu(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        Activation::HardSwish => {
            let g = (x.affine(1.0 / 6.0, 0.5)?.relu()? - x.affine(1.0 / 6.0, -0.5)?.relu()?)?;
            x * g
        }
    }
}

/// Per-image channel means: `[C, N*H*W]` -> `[C, N]`.
fn channel_means(x: &Map) -> Result<Tensor> {
    let c = x.t.dim(0)?;
    x.t.reshape((c, x.n, x.h * x.w))?.mean(2)
}

/// `x * g` with a per-image channel gate `g` `[C, N]`: `[C, N*H*W]`.
fn gate_mul(x: &Map, g: &Tensor) -> Result<Tensor> {
    let c = x.t.dim(0)?;
    x.t.reshape((c, x.n, x.h * x.w))?
        .broadcast_mul(&g.unsqueeze(2)?)?
        .reshape((c, x.n * x.h * x.w))
}

/// Weights by key as safetensors bytes (float32, copied to the CPU), the format of
/// [`TrainableNet::to_safetensors`]; also used for a moving average of the weights.
///
/// # Errors
/// On a device read-back or serialisation failure.
pub fn serialize_weights(weights: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Tensor)> = weights
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    safetensors::tensor::serialize(tensors, None)
        .map_err(|e| candle_core::Error::Msg(format!("safetensors: {e}")))
}
