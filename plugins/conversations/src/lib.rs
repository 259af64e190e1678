//! The `conversations` dataset: ShareGPT files (a JSON array of `{"id", "conversations":
//! [{"from", "value"}, ...]}`) replayed as multi-turn chats.
//!
//! Each entry becomes a chat prompt with its turns as messages (`human` → user, `gpt` →
//! assistant, `system` → system). The host sends a chat with two or more user messages turn by
//! turn, replacing the recorded assistant messages with the server's real replies, so what the
//! dataset's replies contribute is their length: `max-tokens` is `conversation-output-len` when
//! given, else the mean token count of the entry's assistant turns. `max-turns` keeps the first
//! N user turns. A chat ends at its last user message: a recorded reply after it would otherwise
//! be sent as if it were history (the host sends a chat with a single user message as it is).
//! Entries without a user turn are skipped. Order, `count`, `disable-shuffle` and `cycle` work as
//! in the `sharegpt` reader.

use llmb_plugin_sdk::json_array;
use llmb_plugin_sdk::sampler;

use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;

use llmb_plugin_sdk::dataset::{
    ChatMessage, DatasetInfo, DatasetParams, Guest, GuestSource, Prompt, Role, Sample,
    parse_option, tokenizer,
};
use serde::Deserialize;

use json_array::ArrayElements;
use sampler::{Format, Plan, Record, Records, Sampler, SourceState, open_data_file, positive};

/// `max-tokens` for a conversation without any recorded reply: the mean of nothing is no
/// guide, so the `custom` dataset's default output length stands in.
pub const NO_REPLY_OUTPUT_LEN: u32 = 256;

/// The chat role of a ShareGPT speaker. Besides `human`, `gpt` and `system`, the names other
/// ShareGPT exports use for the assistant (`chatgpt`, `bard`, `bing`, `model`) and the OpenAI
/// role names are accepted.
pub fn role(from: &str) -> Option<Role> {
    match from {
        "human" | "user" => Some(Role::User),
        "gpt" | "assistant" | "chatgpt" | "bard" | "bing" | "model" => Some(Role::Assistant),
        "system" => Some(Role::System),
        _ => None,
    }
}

/// What one entry sends, and the replies recorded for the user turns it keeps.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Every message up to the last kept user turn.
    pub messages: Vec<ChatMessage>,
    /// The recorded assistant messages among the kept turns, including the reply to the last
    /// user turn: their lengths set `max-tokens`.
    pub replies: Vec<String>,
}

/// Cuts `turns` before the user turn after the first `max_turns` (all when `None`) and at its
/// last user turn; `None` when there is no user turn.
pub fn conversation(mut turns: Vec<ChatMessage>, max_turns: Option<u32>) -> Option<Conversation> {
    let mut users = 0u32;
    let cut = turns
        .iter()
        .position(|m| {
            if !matches!(m.role, Role::User) {
                return false;
            }
            users += 1;
            max_turns.is_some_and(|n| users > n)
        })
        .unwrap_or(turns.len());
    turns.truncate(cut);
    let last_user = turns.iter().rposition(|m| matches!(m.role, Role::User))?;
    let replies = turns
        .iter()
        .filter(|m| matches!(m.role, Role::Assistant))
        .map(|m| m.content.clone())
        .collect();
    turns.truncate(last_user + 1);
    Some(Conversation {
        messages: turns,
        replies,
    })
}

/// The tokens of every message, as the host counts a chat prompt.
pub fn input_tokens(messages: &[ChatMessage], count: &dyn Fn(&str) -> u32) -> u32 {
    messages.iter().map(|m| count(&m.content)).sum()
}

/// `fixed` when given; else the mean token count of `replies`, rounded to nearest and at
/// least 1 (an empty recorded reply must not ask for zero tokens).
pub fn output_tokens(replies: &[String], fixed: Option<u32>, count: &dyn Fn(&str) -> u32) -> u32 {
    if let Some(n) = fixed {
        return n;
    }
    if replies.is_empty() {
        return NO_REPLY_OUTPUT_LEN;
    }
    let n = replies.len() as u64;
    let total: u64 = replies.iter().map(|r| u64::from(count(r))).sum();
    ((total + n / 2) / n).max(1) as u32
}

/// The options this reader takes, read once when the source opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Seed, count, shuffle and cycle, as every file dataset reads them.
    pub plan: Plan,
    /// `conversation-output-len`: a fixed `max-tokens` for every turn.
    pub output_len: Option<u32>,
    /// `max-turns`: user turns kept per conversation (absent or 0 = all).
    pub max_turns: Option<u32>,
}

/// Reads `conversation-output-len`, `max-turns`, `disable-shuffle` and `cycle`.
pub fn config(params: &DatasetParams) -> Result<Config, String> {
    let max_turns: u32 = parse_option(params, "max-turns", 0)?;
    Ok(Config {
        plan: Plan::from_params(params)?,
        output_len: positive(params, "conversation-output-len")?,
        max_turns: (max_turns > 0).then_some(max_turns),
    })
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    conversations: Option<Vec<Turn<'a>>>,
}

#[derive(Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

/// The conversations reading of a record: [`Format`] for the shared sampler.
pub struct Conversations {
    name: String,
    config: Config,
}

impl Conversations {
    /// `name` is what errors call the file.
    pub fn new(name: &str, config: Config) -> Self {
        Self {
            name: name.to_owned(),
            config,
        }
    }

    /// An entry's turns with their roles checked; empty without a `conversations` list.
    fn turns<'a>(&self, record: &'a Record) -> Result<Vec<(Role, Cow<'a, str>)>, String> {
        if record.bytes.first() != Some(&b'{') {
            return Err(record.error(
                &self.name,
                "expected an object with a \"conversations\" list",
            ));
        }
        let entry: Entry<'a> = serde_json::from_slice(&record.bytes)
            .map_err(|e: serde_json::Error| record.json_error(&self.name, &e))?;
        entry
            .conversations
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, turn)| {
                let role = role(&turn.from).ok_or_else(|| {
                    record.error(
                        &self.name,
                        format!(
                            "turn {}: unknown speaker {:?} (expected human, gpt or system)",
                            i + 1,
                            turn.from
                        ),
                    )
                })?;
                Ok((role, turn.value))
            })
            .collect()
    }

    fn conversation(&self, record: &Record) -> Result<Option<Conversation>, String> {
        let messages = self
            .turns(record)?
            .into_iter()
            .map(|(role, content)| ChatMessage {
                role,
                content: content.into_owned(),
            })
            .collect();
        Ok(conversation(messages, self.config.max_turns))
    }
}

impl Format for Conversations {
    fn admit(&mut self, record: &Record) -> Result<bool, String> {
        Ok(self
            .turns(record)?
            .iter()
            .any(|(role, _)| matches!(role, Role::User)))
    }

    fn measure(
        &self,
        record: &Record,
        count: &dyn Fn(&str) -> u32,
    ) -> Result<Option<Sample>, String> {
        Ok(self.conversation(record)?.map(|c| Sample {
            input_tokens: input_tokens(&c.messages, count),
            output_tokens: output_tokens(&c.replies, self.config.output_len, count),
            prompt: Prompt::Chat(c.messages),
            timestamp: None,
        }))
    }

    fn prompt(&self, record: &Record) -> Result<Prompt, String> {
        let c = self
            .conversation(record)?
            .ok_or_else(|| record.error(&self.name, "the entry changed since it was read"))?;
        Ok(Prompt::Chat(c.messages))
    }

    fn nothing_usable(&self, _measured: u64) -> String {
        format!(
            "{}: no conversation has a user turn (\"from\": \"human\")",
            self.name
        )
    }
}

/// Opens a conversations sampler over any seekable reader: the file in the plugin, a buffer in
/// tests.
pub fn sampler<R: Records>(
    records: R,
    name: &str,
    config: Config,
) -> Result<Sampler<R, Conversations>, String> {
    Sampler::new(records, Conversations::new(name, config), config.plan)
}

/// The plugin's exports.
pub struct ConversationsDataset;

type FileRecords = ArrayElements<BufReader<File>>;

/// One `source` resource: the sampler over the user's file.
pub struct ConversationsSource {
    state: SourceState<FileRecords, Conversations>,
}

fn open(params: &DatasetParams) -> Result<Sampler<FileRecords, Conversations>, String> {
    let config = config(params)?;
    let (reader, shown) = open_data_file(
        params,
        "the conversations dataset needs --dataset-path FILE (a ShareGPT JSON array)",
    )?;
    sampler(ArrayElements::new(reader, &shown), &shown, config)
}

impl Guest for ConversationsDataset {
    type Source = ConversationsSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "conversations".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "ShareGPT JSON from --dataset-path as multi-turn chats run turn by turn with the server's replies; --conversation-output-len, --max-turns, --disable-shuffle, cycle".into(),
        }
    }
}

impl GuestSource for ConversationsSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: SourceState::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        self.state.next_batch(max, &tokenizer::count)
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(ConversationsDataset);

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;
    use crate::sampler::Plan;

    const SAMPLE: &str = include_str!("../../../datasets/sharegpt-sample.json");
    const NAME: &str = "sharegpt-sample.json";

    use llmb_plugin_sdk::testing::words;

    use llmb_plugin_sdk::testing::Trickle;

    fn cfg(seed: u64, count: u64, shuffle: bool, cycle: bool) -> Config {
        Config {
            plan: Plan {
                seed,
                count,
                shuffle,
                cycle,
            },
            output_len: None,
            max_turns: None,
        }
    }

    fn run_with_step(text: &str, config: Config, step: usize) -> Result<Vec<Sample>, String> {
        let trickle = Trickle::new(text, step);
        let records = ArrayElements::new(BufReader::with_capacity(step, trickle), NAME);
        let mut sampler = sampler(records, NAME, config)?;
        let mut out = Vec::new();
        loop {
            let batch = sampler.next_batch(4, &words)?;
            if batch.is_empty() {
                return Ok(out);
            }
            out.extend(batch);
        }
    }

    fn run(text: &str, config: Config) -> Result<Vec<Sample>, String> {
        run_with_step(text, config, 16)
    }

    fn messages(sample: &Sample) -> &[ChatMessage] {
        match &sample.prompt {
            Prompt::Chat(m) => m,
            other => panic!("expected a chat prompt, got {other:?}"),
        }
    }

    fn roles(sample: &Sample) -> String {
        messages(sample)
            .iter()
            .map(|m| match m.role {
                Role::System => 's',
                Role::User => 'u',
                Role::Assistant => 'a',
                Role::Tool => 't',
            })
            .collect()
    }

    fn first_words(samples: &[Sample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| {
                let m = messages(s);
                m.iter()
                    .find(|m| matches!(m.role, Role::User))
                    .unwrap()
                    .content
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn summary(samples: &[Sample]) -> Vec<(String, u32, u32)> {
        samples
            .iter()
            .map(|s| (roles(s), s.input_tokens, s.output_tokens))
            .collect()
    }

    fn row(roles: &str, input: u32, output: u32) -> (String, u32, u32) {
        (roles.into(), input, output)
    }

    #[test]
    fn every_entry_with_a_user_turn_becomes_a_chat() {
        let samples = run(SAMPLE, cfg(0, 0, false, false)).unwrap();
        assert_eq!(
            summary(&samples),
            [
                row("uau", 40, 18),
                row("u", 10, 29),
                row("suau", 43, 16),
                row("u", 2, 10),
                row("u", 9, 1),
                row("u", 9, NO_REPLY_OUTPUT_LEN),
                row("uauau", 58, 15),
                row("u", 14, 24),
                row("uau", 38, 17),
            ]
        );
        let system_first = messages(&samples[2]);
        assert_eq!(
            system_first[0].content,
            "You are a concise assistant for people who operate inference servers."
        );
        assert_eq!(
            system_first[3].content,
            "And what about memory for the KV cache?"
        );
    }

    #[test]
    fn max_turns_keeps_the_first_user_turns_and_their_replies() {
        let mut config = cfg(0, 0, false, false);
        config.max_turns = Some(1);
        let samples = run(SAMPLE, config).unwrap();
        assert_eq!(
            summary(&samples)[..3],
            [row("u", 11, 21), row("u", 10, 29), row("su", 19, 16)]
        );
        assert_eq!(summary(&samples)[6], row("u", 9, 18));
        config.max_turns = Some(2);
        let samples = run(SAMPLE, config).unwrap();
        assert_eq!(summary(&samples)[6], row("uau", 36, 17));
    }

    #[test]
    fn a_fixed_output_length_replaces_the_mean_reply() {
        let mut config = cfg(0, 0, false, false);
        config.output_len = Some(64);
        let samples = run(SAMPLE, config).unwrap();
        assert_eq!(samples.len(), 9);
        assert!(samples.iter().all(|s| s.output_tokens == 64));
    }

    #[test]
    fn conversation_cuts_and_averages() {
        let msg = |role, content: &str| ChatMessage {
            role,
            content: content.into(),
        };
        let turns = vec![
            msg(Role::Assistant, "welcome"),
            msg(Role::User, "a"),
            msg(Role::Assistant, "one two"),
            msg(Role::User, "b"),
            msg(Role::System, "note"),
        ];
        let c = conversation(turns.clone(), None).unwrap();
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.replies, ["welcome", "one two"]);
        assert_eq!(output_tokens(&c.replies, None, &words), 2);
        assert_eq!(input_tokens(&c.messages, &words), 5);
        let c = conversation(turns, Some(1)).unwrap();
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.replies, ["welcome", "one two"]);
        assert!(conversation(vec![msg(Role::Assistant, "x")], None).is_none());
        assert_eq!(output_tokens(&["".into()], None, &words), 1);
        assert_eq!(output_tokens(&[], None, &words), NO_REPLY_OUTPUT_LEN);
        assert_eq!(output_tokens(&[], Some(9), &words), 9);
    }

    #[test]
    fn entries_without_a_user_turn_are_skipped() {
        let samples = run(SAMPLE, cfg(0, 0, false, false)).unwrap();
        assert!(!first_words(&samples).contains(&"Welcome back".to_string()));
        let err = run(
            r#"[{"conversations": [{"from": "gpt", "value": "hello"}]}, {"id": "x"}]"#,
            cfg(0, 0, true, false),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "sharegpt-sample.json: no conversation has a user turn (\"from\": \"human\")"
        );
    }

    #[test]
    fn the_seed_fixes_the_order_and_count_takes_a_prefix() {
        let a = first_words(&run(SAMPLE, cfg(11, 0, true, false)).unwrap());
        assert_eq!(
            a,
            first_words(&run(SAMPLE, cfg(11, 0, true, false)).unwrap())
        );
        assert_ne!(
            a,
            first_words(&run(SAMPLE, cfg(12, 0, true, false)).unwrap())
        );
        assert_eq!(
            first_words(&run(SAMPLE, cfg(11, 4, true, false)).unwrap()),
            a[..4]
        );
        assert_eq!(a.len(), 9);
    }

    #[test]
    fn cycle_repeats_when_the_file_is_short() {
        assert_eq!(run(SAMPLE, cfg(1, 30, true, false)).unwrap().len(), 9);
        let cycled = run(SAMPLE, cfg(1, 30, true, true)).unwrap();
        assert_eq!(cycled.len(), 30);
        let once = summary(&cycled[..9]);
        for (i, s) in summary(&cycled).into_iter().enumerate() {
            assert_eq!(s, once[i % 9]);
        }
        assert_eq!(first_words(&cycled)[9..18], first_words(&cycled)[..9]);
    }

    #[test]
    fn reading_is_the_same_at_any_read_size() {
        let whole = summary(&run_with_step(SAMPLE, cfg(4, 0, true, false), 4096).unwrap());
        for step in [1, 2, 5] {
            let samples = run_with_step(SAMPLE, cfg(4, 0, true, false), step).unwrap();
            assert_eq!(summary(&samples), whole, "step {step}");
        }
    }

    #[test]
    fn bad_turns_name_the_element_and_turn() {
        let data = "[\n{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]},\n{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"robot\", \"value\": \"b\"}]}\n]";
        let at = data
            .find("{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"")
            .unwrap();
        assert_eq!(
            run(data, cfg(0, 0, true, false)).unwrap_err(),
            format!(
                "sharegpt-sample.json:3: array element 2 (byte {at}): turn 2: unknown speaker \"robot\" (expected human, gpt or system)"
            )
        );
        let data = "[{\"conversations\": [{\"from\": \"human\"}]}]";
        assert_eq!(
            run(data, cfg(0, 0, false, false)).unwrap_err(),
            "sharegpt-sample.json:1: array element 1 (byte 36): missing field `value`"
        );
        assert_eq!(
            run("[[]]", cfg(0, 0, false, false)).unwrap_err(),
            "sharegpt-sample.json:1: array element 1 (byte 1): expected an object with a \"conversations\" list"
        );
        assert_eq!(
            run("[{\"conversations\": []},", cfg(0, 0, false, false)).unwrap_err(),
            "sharegpt-sample.json:1: byte 23: the file ends before the array is closed (after 1 elements)"
        );
    }

    fn params(options: &[(&str, &str)]) -> DatasetParams {
        llmb_plugin_sdk::testing::dataset_params(2, 0, options, &["conversations.json"])
    }

    #[test]
    fn options_are_read_and_checked() {
        assert_eq!(super::config(&params(&[])).unwrap(), cfg(2, 0, true, false));
        assert_eq!(
            super::config(&params(&[
                ("conversation-output-len", "32"),
                ("max-turns", "3"),
                ("disable-shuffle", "true"),
                ("cycle", "false"),
            ]))
            .unwrap(),
            Config {
                plan: Plan {
                    seed: 2,
                    count: 0,
                    shuffle: false,
                    cycle: false
                },
                output_len: Some(32),
                max_turns: Some(3),
            }
        );
        assert_eq!(
            super::config(&params(&[("max-turns", "0")]))
                .unwrap()
                .max_turns,
            None
        );
        assert_eq!(
            super::config(&params(&[("max-turns", "-1")])).unwrap_err(),
            "invalid value \"-1\" for --max-turns"
        );
        assert_eq!(
            super::config(&params(&[("conversation-output-len", "0")])).unwrap_err(),
            "--conversation-output-len must be at least 1"
        );
    }

    /// Any file, shuffled or streamed, cycled or not: samples or an error naming file and line.
    #[test]
    fn fuzz() {
        let multi = include_str!("../../../datasets/multi-turn-conversations.json");
        llmb_plugin_sdk::testing::fuzz::reader(
            NAME,
            &[SAMPLE.as_bytes(), multi.as_bytes()],
            |content| {
                for (count, shuffle, cycle) in [(0, false, false), (5, true, true)] {
                    let mut config = cfg(1, count, shuffle, cycle);
                    config.max_turns = shuffle.then_some(2);
                    let trickle = Trickle::from_bytes(content, 7);
                    let records = ArrayElements::new(BufReader::with_capacity(7, trickle), NAME);
                    let mut sampler = sampler(records, NAME, config)?;
                    while !sampler.next_batch(3, &words)?.is_empty() {}
                }
                Ok(())
            },
        );
    }
}
