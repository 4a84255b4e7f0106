//! `tessera import FILE`: historical messages from JSONL (one Segment message per line)
//! or CSV (one message per row, columns mapped to fields), through the same validation
//! as the Tracking API, appended durably in batches. A progress bar shows the bytes
//! read; rejected rows go to a file with their line number, code and reason.
//!
//! Exit code: 0 when every row was stored (or already was), 2 when some were rejected,
//! 1 when the import could not run at all.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tessera_core::fields::MessageFields;
use tessera_core::message::{MessageType, RequestDefaults, normalize};
use tessera_core::request::MAX_MESSAGE_BYTES;
use tessera_core::time::{Clock, SystemClock};
use tessera_core::{ErrorCode, Rejection};
use tessera_identity::processor::stored_rules;
use tessera_identity::rules::CompiledRules;
use tessera_runtime::privacy::{Privacy, PrivacyConfig, Screened};
use tessera_runtime::{StoreOptions, open_stores};
use tessera_store::{AppendBatch, EventLog, EventRecord};

/// Messages appended per durable commit.
const IMPORT_BATCH: usize = 2_000;

/// File formats `tessera import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON Segment message per line
    Jsonl,
    /// A header row, then one message per row
    Csv,
}

/// Arguments of `tessera import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import (.jsonl/.json or .csv)
    pub file: PathBuf,
    /// The source the messages are stored under (id or name)
    #[arg(long)]
    pub source: String,
    /// File format [default: from the extension; .csv is CSV, anything else JSONL]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// CSV: the message type of every row, unless a column is mapped to "type"
    #[arg(long, default_value = "track")]
    pub r#type: String,
    /// CSV: field=column pairs, e.g. "userId=customer_id,event=action,properties.total=amount".
    /// Unmapped columns become properties (track/page/screen) or traits (identify/group).
    #[arg(long, value_delimiter = ',')]
    pub map: Vec<String>,
    /// Where rejected rows are written [default: FILE.rejected.jsonl]
    #[arg(long)]
    pub rejects: Option<PathBuf>,
}

/// Counts of an import.
#[derive(Debug, Default)]
struct Summary {
    rows: u64,
    stored: u64,
    duplicates: u64,
    rejected: u64,
    suppressed: u64,
}

/// Runs an import.
pub fn run(
    data_dir: &Path,
    dedup: tessera_store_sqlite::DedupConfig,
    privacy: &PrivacyConfig,
    args: &ImportArgs,
) -> anyhow::Result<ExitCode> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let format =
        args.format
            .unwrap_or_else(|| match args.file.extension().and_then(|e| e.to_str()) {
                Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
                _ => Format::Jsonl,
            });
    let csv_plan = match format {
        Format::Csv => Some(CsvPlan::new(&args.r#type, &args.map)?),
        Format::Jsonl => None,
    };
    let stores = open_stores(StoreOptions::writer(data_dir, dedup))?;
    let log = stores.events()?;
    let catalog = stores.catalog()?;
    // Erased people stay erased: their identifiers are suppressed here as at the API.
    let privacy = Privacy::open(Arc::clone(&catalog), privacy.clone())?;
    let screen = (&privacy, stored_rules(catalog.as_ref())?);
    let source =
        tessera_runtime::sources::resolve_source(catalog.as_ref(), &args.source).map_err(|e| {
            match e {
                tessera_runtime::sources::SourceError::User(user) => anyhow::anyhow!(
                    "[{}] {} (`tessera sources create NAME` creates one)",
                    user.code,
                    user.message
                ),
                tessera_runtime::sources::SourceError::Store(store) => store.into(),
            }
        })?;
    let rejects_path = args.rejects.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".rejected.jsonl");
        PathBuf::from(name)
    });
    let mut rejects: Option<BufWriter<File>> = None;

    let progress = ProgressBar::new(size).with_style(
        ProgressStyle::with_template(
            "{spinner} importing [{bar:30}] {bytes}/{total_bytes} {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let reader = BufReader::new(progress.wrap_read(file));
    let mut importer = Importer {
        log: log.as_ref(),
        source_key: source.key,
        clock: &SystemClock,
        pending: Vec::with_capacity(IMPORT_BATCH),
        summary: Summary::default(),
        screen,
    };
    let mut reject =
        |line: u64, rejection: &Rejection, summary: &mut Summary| -> anyhow::Result<()> {
            summary.rejected += 1;
            let writer = match &mut rejects {
                Some(writer) => writer,
                None => rejects.insert(BufWriter::new(File::create(&rejects_path).with_context(
                    || format!("cannot write rejected rows to {}", rejects_path.display()),
                )?)),
            };
            writeln!(
                writer,
                "{}",
                json!({"line": line, "code": rejection.code.as_str(), "message": rejection.message})
            )?;
            Ok(())
        };

    match &csv_plan {
        None => {
            for (index, line) in reader.split(b'\n').enumerate() {
                let line_number = index as u64 + 1;
                let line = line.with_context(|| format!("cannot read line {line_number}"))?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let message = parse_jsonl_line(&line);
                importer.add(line_number, message, &mut reject)?;
            }
        }
        Some(plan) => {
            let mut csv_reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
            let headers = csv_reader
                .headers()
                .context("cannot read the CSV header row")?
                .clone();
            plan.check_columns(&headers)?;
            for (index, record) in csv_reader.records().enumerate() {
                let line_number = index as u64 + 2;
                let message = match record {
                    Ok(record) => Ok(plan.message(&headers, &record)),
                    Err(error) => Err(Rejection {
                        code: ErrorCode::InvalidInputFile,
                        message: format!("row is not valid CSV: {error}"),
                        message_type: None,
                        message_id: None,
                    }),
                };
                importer.add(line_number, message, &mut reject)?;
            }
        }
    }
    importer.flush()?;
    progress.finish_and_clear();
    if let Some(mut writer) = rejects {
        writer.flush()?;
    }
    let summary = importer.summary;
    eprintln!(
        "Imported {}: {} rows read, {} stored, {} already stored, {} rejected",
        args.file.display(),
        summary.rows,
        summary.stored,
        summary.duplicates,
        summary.rejected
    );
    if summary.suppressed > 0 {
        eprintln!(
            "{} rows carried an erased person's identifier and were suppressed ([privacy] suppressed_events)",
            summary.suppressed
        );
    }
    if summary.rejected > 0 {
        eprintln!(
            "Rejected rows and their reasons: {}",
            rejects_path.display()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_jsonl_line(line: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let rejection = |code, message: &str| Rejection {
        code,
        message: message.into(),
        message_type: None,
        message_id: None,
    };
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(rejection(
            ErrorCode::MessageTooLarge,
            "message is larger than 32 KB",
        ));
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(rejection(
            ErrorCode::InvalidBody,
            "line must be a JSON object (a Segment message)",
        )),
        Err(_) => Err(rejection(ErrorCode::InvalidJson, "line is not valid JSON")),
    }
}

struct Importer<'a> {
    log: &'a dyn EventLog,
    source_key: i64,
    clock: &'a dyn Clock,
    pending: Vec<EventRecord>,
    summary: Summary,
    /// Suppression of erased identifiers (re-read at each flush: a server may erase
    /// someone while the import runs).
    screen: (&'a Privacy, CompiledRules),
}

impl Importer<'_> {
    fn add(
        &mut self,
        line: u64,
        message: Result<Map<String, Value>, Rejection>,
        reject: &mut impl FnMut(u64, &Rejection, &mut Summary) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.summary.rows += 1;
        // Historical data: keep a valid receivedAt, correct timestamps as the API does.
        let defaults = RequestDefaults {
            keep_received_at: true,
            ..RequestDefaults::default()
        };
        let normalized = message.and_then(|m| {
            normalize(
                MessageFields::from_map(m),
                None,
                &defaults,
                self.clock.now(),
            )
        });
        match normalized {
            Err(rejection) => reject(line, &rejection, &mut self.summary)?,
            Ok(mut message) => {
                let (privacy, rules) = &self.screen;
                if privacy.is_suppressing() {
                    match privacy.screen(rules, &message.body()?) {
                        Screened::Keep => {}
                        Screened::Drop => {
                            self.summary.suppressed += 1;
                            return Ok(());
                        }
                        Screened::Anonymized(body) => {
                            self.summary.suppressed += 1;
                            message.user_id = None;
                            message.anonymous_id = body
                                .get("anonymousId")
                                .and_then(Value::as_str)
                                .map(str::to_owned);
                            message.payload = serde_json::to_string(&body)?;
                        }
                    }
                }
                self.pending.push(EventRecord {
                    source_key: self.source_key,
                    payload: message.payload,
                    message_id: message.message_id,
                    received_at_ms: message.received_at.timestamp_millis(),
                });
                if self.pending.len() >= IMPORT_BATCH {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Rows screened before a suppression that arrived meanwhile are screened again.
        let (privacy, rules) = &self.screen;
        privacy.refresh()?;
        if privacy.is_suppressing() {
            let before = self.pending.len();
            self.pending.retain(|record| {
                serde_json::from_str::<Value>(&record.payload)
                    .ok()
                    .and_then(|v| {
                        v.as_object()
                            .map(|m| privacy.screen(rules, m) == Screened::Keep)
                    })
                    .unwrap_or(true)
            });
            self.summary.suppressed += (before - self.pending.len()) as u64;
        }
        let batch = AppendBatch {
            events: std::mem::take(&mut self.pending),
            rejections: Vec::new(),
        };
        for outcome in self.log.append(std::slice::from_ref(&batch))? {
            self.summary.stored += outcome.appended as u64;
            self.summary.duplicates += outcome.duplicates as u64;
        }
        Ok(())
    }
}

/// How CSV rows become messages.
struct CsvPlan {
    default_type: MessageType,
    /// (message field path, CSV column)
    mapping: Vec<(Vec<String>, String)>,
}

/// Fields whose values stay strings even when they look like numbers.
const STRING_FIELDS: [&str; 11] = [
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "event",
    "groupId",
    "previousId",
    "timestamp",
    "sentAt",
    "originalTimestamp",
    "receivedAt",
];

impl CsvPlan {
    fn new(type_name: &str, pairs: &[String]) -> anyhow::Result<Self> {
        let Some(default_type) = MessageType::parse(type_name) else {
            bail!("--type {type_name:?} is not one of identify, track, page, screen, group, alias");
        };
        let mut mapping = Vec::new();
        for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
            let Some((field, column)) = pair.split_once('=') else {
                bail!("--map entry {pair:?} must look like field=column, e.g. userId=customer_id");
            };
            let path: Vec<String> = field.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) || column.trim().is_empty() {
                bail!("--map entry {pair:?} must look like field=column, e.g. userId=customer_id");
            }
            mapping.push((path, column.trim().to_string()));
        }
        Ok(Self {
            default_type,
            mapping,
        })
    }

    fn check_columns(&self, headers: &csv::StringRecord) -> anyhow::Result<()> {
        for (_, column) in &self.mapping {
            if !headers.iter().any(|h| h == column) {
                bail!(
                    "--map names column {column:?}, which the CSV header does not have (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(())
    }

    fn message(
        &self,
        headers: &csv::StringRecord,
        record: &csv::StringRecord,
    ) -> Map<String, Value> {
        let mut message = Map::new();
        message.insert(
            "type".into(),
            Value::String(self.default_type.as_str().into()),
        );
        let value_of = |column: &str| {
            headers
                .iter()
                .position(|h| h == column)
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
        };
        for (path, column) in &self.mapping {
            if let Some(text) = value_of(column) {
                let keep_string = path.len() == 1 && STRING_FIELDS.contains(&path[0].as_str());
                set_path(&mut message, path, typed_value(text, keep_string));
            }
        }
        let message_type = message
            .get("type")
            .and_then(Value::as_str)
            .and_then(MessageType::parse)
            .unwrap_or(self.default_type);
        let bucket = match message_type {
            MessageType::Identify | MessageType::Group => Some("traits"),
            MessageType::Track | MessageType::Page | MessageType::Screen => Some("properties"),
            MessageType::Alias => None,
        };
        if let Some(bucket) = bucket {
            for column in headers.iter() {
                if self.mapping.iter().any(|(_, c)| c == column) {
                    continue;
                }
                if let Some(text) = value_of(column) {
                    set_path(
                        &mut message,
                        &[bucket.to_string(), column.to_string()],
                        typed_value(text, false),
                    );
                }
            }
        }
        message
    }
}

/// CSV cells are text; numbers and booleans are given their JSON type.
fn typed_value(text: &str, keep_string: bool) -> Value {
    if !keep_string {
        if let Ok(int) = text.parse::<i64>() {
            return Value::from(int);
        }
        if let Some(number) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(number);
        }
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(text.to_string())
}

fn set_path(target: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = target;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        current = next;
    }
    current.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_map_to_messages_with_typed_values() -> anyhow::Result<()> {
        let plan = CsvPlan::new(
            "track",
            &[
                "userId=customer".into(),
                "event=action".into(),
                "properties.total=amount".into(),
            ],
        )?;
        let headers = csv::StringRecord::from(vec!["customer", "action", "amount", "sku", "gift"]);
        let row = csv::StringRecord::from(vec!["00042", "Order Completed", "19.5", "A-1", "true"]);
        let message = plan.message(&headers, &row);
        assert_eq!(
            Value::Object(message),
            json!({"type": "track", "userId": "00042", "event": "Order Completed",
                   "properties": {"total": 19.5, "sku": "A-1", "gift": true}})
        );
        Ok(())
    }

    #[test]
    fn bad_mappings_are_refused_with_a_hint() {
        assert!(CsvPlan::new("track", &["userId".into()]).is_err());
        assert!(CsvPlan::new("purchase", &[]).is_err());
    }
}
