//! How `herald subscribe` prints events on stdout: one line each, either
//! `id=<id> event=<type> data=<data>` for people (no `id=` for an event
//! without one) or, with `--json`, `{"id":…,"event":…,"data":…}` for
//! programs. Status goes to stderr, so stdout holds only events.

use std::io::Write;

use crate::sse::Event;

/// The line for `event`, without its line break.
pub(crate) fn line(event: &Event, json: bool) -> String {
    if json {
        return serde_json::json!({
            "id": event.id,
            "event": event.event,
            "data": event.data,
        })
        .to_string();
    }
    let mut line = String::with_capacity(event.data.len() + 32);
    if let Some(id) = &event.id {
        line.push_str("id=");
        escape_into(&mut line, id);
        line.push(' ');
    }
    line.push_str("event=");
    escape_into(&mut line, &event.event);
    line.push_str(" data=");
    escape_into(&mut line, &event.data);
    line
}

/// Keeps one event on one line, and the terminal safe from what a
/// publisher sent: line breaks, backslashes and other control characters
/// are written as escapes (`\n`, `\\`, `\u{1b}`).
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Writes `line` to stdout at once; `false` when stdout is gone (a closed
/// pipe, as `| head` leaves it), which ends the subscription.
pub(crate) fn emit(line: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, kind: &str, data: &str) -> Event {
        Event {
            id: id.map(str::to_owned),
            event: kind.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn readable_lines_name_id_type_and_data() {
        assert_eq!(
            line(&event(Some("AbC"), "headline", "Rust 2.0 is out"), false),
            "id=AbC event=headline data=Rust 2.0 is out"
        );
        assert_eq!(
            line(&event(None, "message", "typing"), false),
            "event=message data=typing"
        );
    }

    #[test]
    fn hostile_data_stays_on_one_line_and_cannot_drive_the_terminal() {
        let text = line(
            &event(
                Some("i\u{1b}d"),
                "a\u{7}",
                "two\nlines\\n \u{1b}[2J\ttab\u{0}",
            ),
            false,
        );
        assert_eq!(
            text,
            "id=i\\u{1b}d event=a\\u{7} data=two\\nlines\\\\n \\u{1b}[2J\\ttab\\u{0}"
        );
        assert!(!text.chars().any(char::is_control));
    }

    #[test]
    fn json_lines_carry_the_exact_data() {
        let data = "{\"price\": 1}\nline two \u{1b}";
        let text = line(&event(Some("x"), "quote", data), true);
        assert!(!text.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"id": "x", "event": "quote", "data": data})
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&line(&event(None, "message", ""), true)).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"id": null, "event": "message", "data": ""})
        );
    }
}
