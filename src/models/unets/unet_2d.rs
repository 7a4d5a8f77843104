//! `UNet2DModel`: diffusers `models/unets/unet_2d.py`. The parameter paths are exactly the
//! diffusers state-dict names (`conv_in.weight`, `down_blocks.1.attentions.0.to_q.weight`, ...).

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::unet_2d_blocks::{AttnOptions, DownBlock2D, UNetMidBlock2D, UpBlock2D};
use super::UNet2DConfig;
use crate::error::{Error, Result};
use crate::models::embeddings::{TimestepEmbedding, Timesteps};
use crate::models::layers::{Conv2d, Conv2dConfig, GroupNorm};
use crate::models::resnet::{ResnetOptions, TimeScaleShift};
use crate::weights::TensorSource;

/// Named intermediate activations, recorded by [`UNet2DModel::forward_traced`] for parity tests.
pub type Trace = Vec<(String, Tensor<4>)>;

#[derive(Debug, Clone)]
pub struct UNet2DModel {
    pub config: UNet2DConfig,
    pub conv_in: Conv2d,
    pub time_proj: Timesteps,
    pub time_embedding: TimestepEmbedding,
    /// `nn.Embedding(num_class_embeds, time_embed_dim)` weight, for class-conditional models.
    pub class_embedding: Option<Tensor<2>>,
    pub down_blocks: Vec<DownBlock2D>,
    pub mid_block: Option<UNetMidBlock2D>,
    pub up_blocks: Vec<UpBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    device: Device,
}

impl UNet2DModel {
    /// Builds the U-Net, taking every parameter from `src` by its diffusers name.
    /// The config must have been validated ([`UNet2DConfig::validate`]).
    pub fn load(
        config: &UNet2DConfig,
        src: &mut impl TensorSource,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let temb = config.time_embed_dim();
        let groups = config.groups();
        let eps = config.norm_eps;
        let resnet = ResnetOptions {
            temb_channels: temb,
            groups,
            eps,
            time_shift: config.resnet_time_scale_shift,
            output_scale_factor: 1.0,
        };
        let attn_for = |c: usize| AttnOptions {
            head_dim: config.attention_head_dim.unwrap_or(c),
            groups: Some(groups),
            eps,
        };

        // 1. time
        let time_proj = Timesteps {
            num_channels: ch[0],
            flip_sin_to_cos: config.flip_sin_to_cos,
            downscale_freq_shift: config.freq_shift,
        };
        let time_embedding = TimestepEmbedding::load(src, "time_embedding", ch[0], temb)?;
        let class_embedding = match config.num_class_embeds {
            Some(k) => Some(src.get("class_embedding.weight", [k, temb])?),
            None => None,
        };

        // 2. pre-process
        let conv_in = Conv2d::load(
            src,
            "conv_in",
            Conv2dConfig::same(config.in_channels, ch[0], 3),
        )?;

        // 3. down
        let mut down_blocks = Vec::with_capacity(n);
        let mut out_c = ch[0];
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let in_c = out_c;
            out_c = ch[i];
            let attn = kind.has_attention().then(|| attn_for(out_c));
            down_blocks.push(DownBlock2D::load(
                src,
                &format!("down_blocks.{i}"),
                in_c,
                out_c,
                config.layers_per_block,
                resnet,
                attn,
                i + 1 < n,
                config.downsample_padding,
            )?);
        }

        // 4. mid
        let mid_block = match config.mid_block_type {
            Some(_) => {
                let c = ch[n - 1];
                let attn = config.add_attention.then(|| AttnOptions {
                    // diffusers drops the mid attention's norm for scale-shift models unless given.
                    groups: config
                        .attn_norm_num_groups
                        .or((resnet.time_shift == TimeScaleShift::Default).then_some(groups)),
                    ..attn_for(c)
                });
                let mid_resnet = ResnetOptions {
                    output_scale_factor: config.mid_block_scale_factor,
                    ..resnet
                };
                Some(UNetMidBlock2D::load(src, "mid_block", c, mid_resnet, attn)?)
            }
            None => None,
        };

        // 5. up
        let mut up_blocks = Vec::with_capacity(n);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut out_c = rev[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev_c = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let attn = kind.has_attention().then(|| attn_for(out_c));
            up_blocks.push(UpBlock2D::load(
                src,
                &format!("up_blocks.{i}"),
                in_c,
                prev_c,
                out_c,
                config.layers_per_block + 1,
                resnet,
                attn,
                i + 1 < n,
            )?);
        }

        // 6. post-process
        let conv_norm_out = GroupNorm::load(src, "conv_norm_out", groups, ch[0], eps)?;
        let conv_out = Conv2d::load(
            src,
            "conv_out",
            Conv2dConfig::same(ch[0], config.out_channels, 3),
        )?;

        Ok(Self {
            config: config.clone(),
            conv_in,
            time_proj,
            time_embedding,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Predicts the model output (noise, sample or v, per the scheduler's prediction type).
    ///
    /// `sample: [B, in_channels, H, W]`, `timesteps`: one per batch item (or one for all),
    /// `class_labels`: one per batch item for class-conditional models, else `None`.
    /// Returns `[B, out_channels, H, W]`.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        class_labels: Option<&[usize]>,
    ) -> Result<Tensor<4>> {
        self.forward_traced(sample, timesteps, class_labels, None)
    }

    /// [`forward`](Self::forward), recording the named intermediate activations into `trace`.
    pub fn forward_traced(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        class_labels: Option<&[usize]>,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor<4>> {
        let [b, c, h, w] = sample.dims();
        self.check_input(b, c, h, w)?;
        let mut record = |name: &str, t: &Tensor<4>| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name.to_string(), t.clone()));
            }
        };
        let as4 = |t: &Tensor<2>| {
            let [b, d] = t.dims();
            t.clone().reshape([b, d, 1, 1])
        };

        let mut sample = sample;
        if self.config.center_input_sample {
            sample = sample * 2.0 - 1.0;
        }

        // 1. time
        let timesteps: Vec<f32> = match timesteps.len() {
            1 => vec![timesteps[0]; b],
            n if n == b => timesteps.to_vec(),
            n => {
                return Err(Error::invalid(format!(
                    "timesteps: expected 1 or {b} (the batch size) values, found {n}"
                )))
            }
        };
        let t_emb = self.time_proj.forward(&timesteps, &self.device);
        record("time_proj", &as4(&t_emb));
        let mut emb = self.time_embedding.forward(t_emb);
        record("time_embedding", &as4(&emb));
        match (&self.class_embedding, class_labels) {
            (Some(table), Some(labels)) => {
                let k = table.dims()[0];
                if labels.len() != b {
                    return Err(Error::invalid(format!(
                        "class_labels: expected {b} labels (one per batch item), found {}",
                        labels.len()
                    )));
                }
                if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
                    return Err(Error::invalid(format!("class label: expected 0 to {}, found {bad}", k - 1)));
                }
                let ids: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
                let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [b]), &self.device);
                let class_emb = table.clone().select(0, ids);
                record("class_embedding", &as4(&class_emb));
                emb = emb + class_emb;
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    "class_labels: this model is class-conditional, expected one label per image, found none",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "class_labels: this model has no class embedding, expected no labels, found some",
                ))
            }
            (None, None) => {}
        }

        // 2. pre-process
        let mut x = self.conv_in.forward(sample);
        record("conv_in", &x);
        let mut skips = vec![x.clone()];

        // 3. down
        for (i, block) in self.down_blocks.iter().enumerate() {
            x = block.forward(x, &emb, &mut skips);
            record(&format!("down_blocks.{i}"), &x);
        }

        // 4. mid
        if let Some(mid) = &self.mid_block {
            x = mid.forward(x, &emb);
            record("mid_block", &x);
        }

        // 5. up
        for (i, block) in self.up_blocks.iter().enumerate() {
            x = block.forward(x, &emb, &mut skips);
            record(&format!("up_blocks.{i}"), &x);
        }

        // 6. post-process
        let x = self.conv_out.forward(self.conv_norm_out.forward_silu(x));
        Ok(x)
    }

    fn check_input(&self, b: usize, c: usize, h: usize, w: usize) -> Result<()> {
        if c != self.config.in_channels {
            return Err(Error::invalid(format!(
                "sample: expected {} channels, found {c}",
                self.config.in_channels
            )));
        }
        if b == 0 {
            return Err(Error::invalid(
                "sample: expected a batch of at least 1, found 0",
            ));
        }
        let factor = 1usize << (self.config.block_out_channels.len() - 1);
        if h % factor != 0 || w % factor != 0 || h == 0 || w == 0 {
            return Err(Error::invalid(format!(
                "sample: expected height and width divisible by {factor} (one halving per down block), found {h}x{w}"
            )));
        }
        Ok(())
    }
}
