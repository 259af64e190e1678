//! What every request of a run carries besides its prompt: the model (or a LoRA adapter per
//! request), sampling settings, and an optional `x-request-id`.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

use crate::plugin::backend::{GenRequest, Prompt as BPrompt};
use crate::transport::Target;

/// How requests get their `--lora-modules` entry (vLLM's `--lora-assignment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraAssignment {
    /// A module drawn at random (seeded) for each request.
    #[default]
    Random,
    /// The modules in turn, by request number.
    RoundRobin,
}

/// What every request carries besides its prompt; the model is resolved when the run starts.
#[derive(Debug, Clone, Default)]
pub struct RequestDefaults {
    pub ignore_eos: bool,
    pub temperature: Option<f32>,
    /// A JSON object merged into every request body.
    pub extra_body: Option<String>,
    /// Pause between the turns of a conversation.
    pub think_time: Duration,
    /// Ask for a streamed answer (`false`: whole responses, no TTFT/ITL).
    pub streaming: bool,
    pub lora: Option<Lora>,
    /// Each request carries `x-request-id: PREFIX<id>`.
    pub request_id_prefix: Option<String>,
    /// `--cancel-rate` and `--cancel-after`: requests the client abandons on purpose.
    pub cancel: Option<CancelPlan>,
}

/// Which requests the client cancels on purpose, and when: a share of them, picked by a pure
/// function of the request id and the seed (so a run repeats and shards agree), each cut
/// `after` its request was written, as a user closing a chat does. The server should stop
/// generating for them; what arrived before is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CancelPlan {
    /// Share of requests to cancel, in [0, 1].
    pub rate: f64,
    pub after: Duration,
    pub seed: u64,
}

impl CancelPlan {
    /// When request `id` is to be cancelled, if it is one of the share.
    pub fn after_for(&self, id: u64) -> Option<Duration> {
        let draw = splitmix(self.seed ^ splitmix(id ^ 0x4361_6e63)) as f64 / u64::MAX as f64;
        (draw < self.rate).then_some(self.after)
    }
}

impl RequestDefaults {
    /// The template every request of a run is made from, once the model is known.
    pub fn template(&self, model: &str) -> RequestTemplate {
        RequestTemplate {
            model: model.to_string(),
            defaults: self.clone(),
        }
    }
}

/// Per-request settings that do not change within a run: the model and the defaults.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub model: String,
    pub defaults: RequestDefaults,
}

impl RequestTemplate {
    /// The adapter's view of request `id`.
    pub fn request(&self, id: u64, prompt: BPrompt, max_tokens: u32) -> GenRequest {
        let d = &self.defaults;
        GenRequest {
            id,
            model: match &d.lora {
                Some(lora) => lora.pick(id).to_string(),
                None => self.model.clone(),
            },
            prompt,
            max_tokens,
            ignore_eos: d.ignore_eos,
            streaming: d.streaming,
            include_usage: true,
            temperature: d.temperature,
            extra_body: d.extra_body.clone(),
        }
    }
}

/// `--lora-modules`: which adapter each request names as its model.
#[derive(Debug, Clone)]
pub struct Lora {
    modules: Arc<[String]>,
    assignment: LoraAssignment,
    seed: u64,
}

impl Lora {
    /// The plan for `modules` (`None` when there are none); `seed` makes random picks repeat.
    pub fn new(modules: Vec<String>, assignment: LoraAssignment, seed: u64) -> Option<Self> {
        (!modules.is_empty()).then(|| Lora {
            modules: modules.into(),
            assignment,
            seed,
        })
    }

    /// The model name for request number `id`: a pure function of the id, so a run repeats.
    pub fn pick(&self, id: u64) -> &str {
        let n = self.modules.len() as u64;
        let i = match self.assignment {
            LoraAssignment::RoundRobin => id % n,
            LoraAssignment::Random => splitmix(self.seed ^ splitmix(id ^ 0x4c6f_5241)) % n,
        };
        &self.modules[i as usize]
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The target of one request with `x-request-id: PREFIX<id>` added last, so it overrides a
/// `--header` of the same name as in vLLM.
pub fn with_request_id(target: &Target, prefix: &str, id: u64) -> Target {
    let mut t = target.clone();
    if let Ok(v) = HeaderValue::try_from(format!("{prefix}{id}")) {
        t.headers.push((HeaderName::from_static("x-request-id"), v));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_plan_picks_its_share_repeatably() {
        let plan = CancelPlan {
            rate: 0.25,
            after: Duration::from_millis(30),
            seed: 7,
        };
        let picked: Vec<u64> = (0..4000)
            .filter(|&id| plan.after_for(id).is_some())
            .collect();
        assert!((900..1100).contains(&picked.len()), "{}", picked.len());
        let again: Vec<u64> = (0..4000)
            .filter(|&id| plan.after_for(id).is_some())
            .collect();
        assert_eq!(picked, again);
        let none = CancelPlan { rate: 0.0, ..plan };
        assert!((0..4000).all(|id| none.after_for(id).is_none()));
        let all = CancelPlan { rate: 1.0, ..plan };
        assert!((0..4000).all(|id| all.after_for(id) == Some(Duration::from_millis(30))));
    }
}
