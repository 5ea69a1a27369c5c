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
//! convolution of the batch is one `[Cout, Cin] x [Cin, N*H*W]` matmul and every depthwise
//! one is one gather plus one batched `[C, 1, k*k] x [C, k*k, N*Ho*Wo]` matmul.
//!
//! [`TrainableNet::logits`] returns the pre-sigmoid output (the losses need it; this model's
//! logits reach +-300, where `sigmoid` then `log` overflows).

use super::kernels::{same_padding, Activation};
use super::net::BLOCKS;
use super::portable::upsample_matrix;
use super::Preset;
use candle_core::{DType, Device, Result, Tensor, Var};
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
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<Result<_>>()?;
        safetensors::tensor::serialize(tensors, None)
            .map_err(|e| candle_core::Error::Msg(format!("safetensors: {e}")))
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
        let (patches, ho, wo) = self.windows(x, k, s)?;
        let w = self
            .p(&format!("{prefix}.weight"))?
            .reshape((c, 1, k * k))?;
        let b = self.p(&format!("{prefix}.bias"))?.reshape((c, 1))?;
        let y = w
            .matmul(&patches)?
            .reshape((c, x.n * ho * wo))?
            .broadcast_add(&b)?;
        Ok(Map {
            t: activate(&y, act)?,
            n: x.n,
            h: ho,
            w: wo,
        })
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
