//! The documentation cannot drift from the code: docs/configuration.md
//! lists exactly the flags each binary's `--help` prints, with the same
//! environment variables, defaults and possible values; and every relative
//! link in README.md and docs/*.md leads to a file (and heading) that
//! exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use herald_e2e::binary;

/// Each command, and the `##` sections of docs/configuration.md whose
/// tables together describe all of its flags.
const COMMANDS: &[(&[&str], &[&str])] = &[
    (
        &["herald-edge"],
        &["Every service", "History", "herald-edge"],
    ),
    (
        &["herald-publish"],
        &[
            "Every service",
            "History",
            "Internal APIs",
            "herald-publish",
        ],
    ),
    (
        &["herald-presence"],
        &["Every service", "Internal APIs", "herald-presence"],
    ),
    (
        &["herald-push-worker"],
        &["Every service", "Internal APIs", "herald-push-worker"],
    ),
    (&["herald", "publish"], &["herald publish"]),
    (&["herald", "presence"], &["herald presence"]),
    (&["herald", "token"], &["herald token"]),
    (&["herald", "subscribe"], &["herald subscribe"]),
    (
        &["herald", "disconnect"],
        &["Control commands", "herald disconnect"],
    ),
    (
        &["herald", "revoke"],
        &["Control commands", "herald revoke"],
    ),
    (
        &["herald", "follow"],
        &["Control commands", "herald follow and unfollow"],
    ),
    (
        &["herald", "unfollow"],
        &["Control commands", "herald follow and unfollow"],
    ),
    (
        &["herald", "history"],
        &["Control commands", "herald history"],
    ),
    (
        &["herald", "topics"],
        &["Control commands", "herald topics"],
    ),
    (&["herald", "lifecycle"], &["herald lifecycle"]),
];

#[test]
fn configuration_doc_matches_every_binarys_help() {
    let doc = read(&root().join("docs/configuration.md"));
    let sections = sections(&doc);
    for (command, names) in COMMANDS {
        let options = help_options(command);
        let rows: Vec<&Row> = names
            .iter()
            .flat_map(|name| section(&sections, name))
            .collect();
        check_command(&command.join(" "), &options, &rows);
    }
    let mapped: BTreeSet<&str> = COMMANDS
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();
    for (name, rows) in &sections {
        let has_flags = rows.iter().any(|row| row.flag.is_some());
        assert!(
            !has_flags || mapped.contains(name.as_str()),
            "section {name:?} documents flags, but no command is checked against it"
        );
    }
    let subcommands = herald_subcommands();
    let documented: BTreeSet<String> = COMMANDS
        .iter()
        .filter(|(command, _)| command[0] == "herald")
        .map(|(command, _)| command[1].to_owned())
        .collect();
    assert_eq!(subcommands, documented, "herald's subcommands");
}

#[test]
fn relative_links_in_the_docs_lead_somewhere() {
    let root = root();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    for file in &files {
        for link in links(&read(file)) {
            check_link(file, &link);
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
}

/// The workspace root, where README.md and docs/ are.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `file` as the repository names it.
fn shown(file: &Path) -> String {
    file.strip_prefix(root())
        .unwrap_or(file)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One option as `--help` prints it.
#[derive(Debug)]
struct HelpOption {
    flag: String,
    env: Option<String>,
    default: Option<String>,
    values: Vec<String>,
}

/// One row of a table in docs/configuration.md: `| flag | env | default | meaning |`.
#[derive(Debug)]
struct Row {
    flag: Option<String>,
    env: Option<String>,
    default: String,
    text: String,
}

/// Every documented option must be one of `options` with the same
/// variable, default and values, and every option must be documented once.
fn check_command(command: &str, options: &[HelpOption], rows: &[&Row]) {
    for option in options {
        let matching: Vec<&&Row> = rows
            .iter()
            .filter(|row| row.flag.as_deref() == Some(option.flag.as_str()))
            .collect();
        let [row] = matching[..] else {
            panic!(
                "{command} --{}: documented {} times in docs/configuration.md, want once",
                option.flag,
                matching.len()
            );
        };
        check_row(command, option, row);
    }
    for row in rows {
        if let Some(flag) = &row.flag {
            assert!(
                options.iter().any(|o| &o.flag == flag),
                "docs/configuration.md documents --{flag} for `{command}`, whose --help has no such flag"
            );
        }
    }
}

fn check_row(command: &str, option: &HelpOption, row: &Row) {
    let flag = &option.flag;
    assert_eq!(
        row.env, option.env,
        "{command} --{flag}: environment variable"
    );
    if let Some(default) = option.default.as_deref().filter(|d| !d.is_empty()) {
        assert!(
            row.default.contains(&format!("`{default}`")),
            "{command} --{flag}: the default column {:?} should say `{default}`",
            row.default
        );
    }
    for value in &option.values {
        assert!(
            row.text.contains(&format!("`{value}`")),
            "{command} --{flag}: possible value `{value}` is not documented"
        );
    }
}

/// Runs `command --help` and reads its options (`--help` and `--version`
/// aside).
fn help_options(command: &[&str]) -> Vec<HelpOption> {
    let text = help(command);
    let options = parse_help(&text);
    assert!(
        !options.is_empty(),
        "no options in {command:?} --help:\n{text}"
    );
    options
}

fn help(command: &[&str]) -> String {
    let mut args = command[1..].to_vec();
    args.push("--help");
    let output = herald_testing::process::run(&binary(command[0]), &args, &[]);
    assert!(output.status.success(), "{command:?} --help: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// clap's help: an option starts on a line beginning with `--flag` (or
/// `-x, --flag`); its description, with `[env: …]`, `[default: …]` and
/// `[possible values: …]`, follows on that line or the next ones.
fn parse_help(text: &str) -> Vec<HelpOption> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        match option_flag(line) {
            Some(flag) => blocks.push((flag, line.to_owned())),
            None if line.starts_with(' ') => {
                if let Some((_, block)) = blocks.last_mut() {
                    block.push_str(line);
                }
            }
            None => {}
        }
    }
    blocks
        .into_iter()
        .filter(|(flag, _)| flag != "help" && flag != "version")
        .map(|(flag, block)| HelpOption {
            flag,
            env: bracket(&block, "[env: ").map(|env| env.trim_end_matches('=').to_owned()),
            default: bracket(&block, "[default: ").map(|d| d.trim_matches('"').to_owned()),
            values: bracket(&block, "[possible values: ")
                .map(|v| v.split(", ").map(str::to_owned).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// The long flag an option line defines, without its dashes. Options are
/// indented by 2 to 6 spaces, their descriptions by more.
fn option_flag(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start().len();
    if !(2..=6).contains(&indent) {
        return None;
    }
    let line = line.trim_start();
    let line = match line.strip_prefix('-') {
        Some(rest) if !rest.starts_with('-') => rest.get(3..)?,
        _ => line,
    };
    let name = line.strip_prefix("--")?;
    let end = name
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(name.len());
    Some(name[..end].to_owned())
}

/// What follows `open` up to the next `]`.
fn bracket<'a>(block: &'a str, open: &str) -> Option<&'a str> {
    let start = block.find(open)? + open.len();
    let len = block[start..].find(']')?;
    Some(&block[start..start + len])
}

/// `herald --help`'s subcommands, `help` aside.
fn herald_subcommands() -> BTreeSet<String> {
    let text = help(&["herald"]);
    text.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The table rows of each `##` section, in order.
fn sections(doc: &str) -> Vec<(String, Vec<Row>)> {
    let mut sections: Vec<(String, Vec<Row>)> = Vec::new();
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            sections.push((title.to_owned(), Vec::new()));
        } else if let (Some(row), Some((_, rows))) = (row(line), sections.last_mut()) {
            rows.push(row);
        }
    }
    sections
}

fn section<'a>(sections: &'a [(String, Vec<Row>)], name: &str) -> &'a [Row] {
    let (_, rows) = sections
        .iter()
        .find(|(title, _)| title == name)
        .unwrap_or_else(|| panic!("docs/configuration.md has no section `## {name}`"));
    assert!(!rows.is_empty(), "section `## {name}` has no table");
    rows
}

/// A table row of the `| flag | env | default | meaning |` tables; header
/// and separator lines are not rows.
fn row(line: &str) -> Option<Row> {
    let inner = line.trim_end().strip_prefix('|')?.strip_suffix('|')?;
    let cells: Vec<&str> = inner.split('|').map(str::trim).collect();
    if cells.len() < 4 || cells[0] == "flag" || cells[0] == "env" || cells[0].starts_with("---") {
        return None;
    }
    let flag = code(cells[0]).and_then(|c| c.strip_prefix("--").map(str::to_owned));
    let env = code(cells[1]).map(str::to_owned);
    Some(Row {
        flag,
        env,
        default: cells[2].to_owned(),
        text: line.to_owned(),
    })
}

/// The first code span of a cell.
fn code(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

/// A relative link: a path (empty for this file) and an optional anchor.
#[derive(Debug)]
struct Link {
    path: String,
    anchor: Option<String>,
}

/// The relative links of a Markdown text, outside code.
fn links(markdown: &str) -> Vec<Link> {
    let mut links = Vec::new();
    for line in prose(markdown) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor.to_owned())),
                    None => (target, None),
                };
                links.push(Link {
                    path: path.to_owned(),
                    anchor,
                });
            }
        }
    }
    links
}

/// The lines outside fenced code blocks, with inline code spans removed.
fn prose(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            let kept: String = line.split('`').step_by(2).collect();
            lines.push(kept);
        }
    }
    lines
}

fn check_link(file: &Path, link: &Link) {
    let target = if link.path.is_empty() {
        file.to_owned()
    } else {
        file.parent().unwrap().join(&link.path)
    };
    assert!(
        target.exists(),
        "{}: link to {} leads nowhere",
        shown(file),
        link.path
    );
    let Some(anchor) = &link.anchor else { return };
    let anchors = anchors(&read(&target));
    assert!(
        anchors.contains(anchor),
        "{}: {}#{anchor}: no such heading; there are {anchors:?}",
        shown(file),
        link.path
    );
}

/// The anchors GitHub makes for a Markdown file's headings: lowercased,
/// punctuation dropped, spaces made hyphens, repeats numbered.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(title) = line.strip_prefix('#').filter(|_| !fenced) else {
            continue;
        };
        let slug: String = title
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while !anchors.insert(unique.clone()) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
    }
    anchors
}
