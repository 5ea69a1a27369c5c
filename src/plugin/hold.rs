//! The state of the full-resolution hold of the refined person probability
//! ([`crate::postprocess::RefinedHold`], the effect's `Hold` technique): two RG32F
//! texrenders at the frame size (r: the held probability, g: the 3x3 mean of the frame's
//! luma), ping-ponged, stepped once per video frame however often OBS renders the filter in it
//! (projectors, multiview).

use crate::obs::graphics::{Format, Gfx, TexRender, TextureRef};

/// Two state textures and what is in them.
pub(super) struct HoldState {
    states: [TexRender; 2],
    /// The slot holding the newest state.
    current: usize,
    /// The tick and frame size the newest state was made for; `None`: no state.
    made: Option<(u64, (u32, u32))>,
}

impl HoldState {
    /// Creates the two texrenders (their textures are made at the first step's size, and
    /// re-made by OBS when the size changes). `None` when the device cannot create them.
    pub(super) fn new(gfx: &Gfx<'_>) -> Option<HoldState> {
        Some(HoldState {
            states: [
                TexRender::new(gfx, Format::Rg32f)?,
                TexRender::new(gfx, Format::Rg32f)?,
            ],
            current: 0,
            made: None,
        })
    }

    /// Forgets the state: the next step passes the refined probability through.
    pub(super) fn reset(&mut self) {
        self.made = None;
    }

    /// The state for video tick `tick` at `size` (width, height pixels): on the first call
    /// of a tick, `draw(target, previous, band)` renders the new state into `target` from the
    /// previous one (`None` and band 0 after a reset or a size change: the hold restarts); later calls in the same tick return the same state. `band` is the
    /// mask's hold band (probability units). `None` when drawing failed (the state is then
    /// dropped).
    pub(super) fn step<'a>(
        &'a mut self,
        tick: u64,
        size: (u32, u32),
        band: f32,
        draw: impl FnOnce(&mut TexRender, Option<TextureRef<'_>>, f32) -> bool,
    ) -> Option<TextureRef<'a>> {
        if self.made.map(|(t, _)| t) != Some(tick) || self.made.map(|(_, s)| s) != Some(size) {
            let warm = self.made.is_some_and(|(_, s)| s == size);
            let next = 1 - self.current;
            let [a, b] = &mut self.states;
            let (prev, target) = if next == 1 { (&*a, b) } else { (&*b, a) };
            let previous = if warm { prev.texture() } else { None };
            let band = if previous.is_some() { band } else { 0.0 };
            if !draw(target, previous, band) {
                self.made = None;
                return None;
            }
            self.current = next;
            self.made = Some((tick, size));
        }
        self.states[self.current].texture()
    }
}
