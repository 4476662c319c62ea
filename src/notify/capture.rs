//! The log lines of one run, kept for its notification (`.Stats.LogOutput` in templates,
//! the tail of the default failure message).
//!
//! A run happens inside a span named [`RUN_SPAN`]; [`CaptureLayer`], installed next to the
//! log formatter, appends every event logged inside such a span to that span's buffer.
//! Runs of different schedules at the same time keep separate buffers.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub const RUN_SPAN: &str = "dunnage_run";
/// A run that logs more than this keeps only its last lines (a notification stays small).
const MAX_BYTES: usize = 64 * 1024;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<String>>);

/// Captures events inside run spans. Add it to the subscriber with its own level filter.
pub struct CaptureLayer;

impl<S> tracing_subscriber::Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() == RUN_SPAN {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(Buffer::default());
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(buffer) = span.extensions().get::<Buffer>() {
                let mut line = String::new();
                let now = jiff::Timestamp::now();
                let _ = write!(
                    line,
                    "time={} level={} msg=",
                    now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    event.metadata().level()
                );
                event.record(&mut Fields(&mut line));
                line.push('\n');
                let mut text = buffer.0.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&crate::secrets::redact(&line));
                if text.len() > MAX_BYTES {
                    cut_front(&mut text, MAX_BYTES / 2);
                }
                return;
            }
        }
    }
}

/// Keeps about the last `keep` bytes of `text`, from a line start, marking the cut. Log
/// lines may hold any UTF-8 (file names), so the cut moves to a character boundary first.
fn cut_front(text: &mut String, keep: usize) {
    let mut cut = text.len().saturating_sub(keep);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    let cut = text[cut..].find('\n').map_or(cut, |i| cut + i + 1);
    text.replace_range(..cut, "[earlier lines cut]\n");
}

/// Writes the message, then other fields as `key=value`.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// The current run's log buffer itself, to read while the run goes on (the API's run log).
pub fn current_buffer() -> Option<Arc<Mutex<String>>> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let mut span = registry.span(id)?;
            loop {
                if let Some(b) = span.extensions().get::<Buffer>() {
                    return Some(b.0.clone());
                }
                span = span.parent()?;
            }
        })
        .flatten()
}

/// What the current run has logged so far (empty when no capture layer is installed, as in
/// library use without our subscriber).
pub fn current_log() -> String {
    current_buffer()
        .map(|b| b.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn long_logs_keep_their_last_whole_lines_whatever_the_characters() {
        for shift in 0..4 {
            let mut text = "é".repeat(shift) + &"ünïcödé line\n".repeat(40);
            cut_front(&mut text, 100);
            assert!(
                text.starts_with("[earlier lines cut]\nünïcödé line\n"),
                "{text}"
            );
            assert!(text.len() <= 100 + 40, "{}", text.len());
        }
    }

    #[test]
    fn events_inside_a_run_span_are_kept_per_run() {
        let subscriber = Registry::default().with(CaptureLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let a = tracing::info_span!(RUN_SPAN);
            let b = tracing::info_span!(RUN_SPAN);
            a.in_scope(|| tracing::warn!(size = 3, "first run"));
            b.in_scope(|| tracing::info!("second run"));
            let log = a.in_scope(current_log);
            assert!(log.contains("level=WARN msg=first run size=3"), "{log}");
            assert!(!log.contains("second") && !log.contains("outside"), "{log}");
            let nested = b.in_scope(|| {
                tracing::info_span!("inner").in_scope(|| {
                    tracing::info!("nested");
                    current_log()
                })
            });
            assert!(
                nested.contains("second run") && nested.contains("nested"),
                "{nested}"
            );
        });
        assert_eq!(current_log(), "");
    }
}
