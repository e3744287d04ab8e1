//! The README and the guide in `docs/` stay true: their Rust code runs as doc tests (the
//! `docs` module of `tests/src/lib.rs`), and these checks keep the rest from drifting: every
//! page is doc-tested, every link between pages leads to a file and a heading, and every shell
//! command is one CI runs or names only options the tool has.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// README.md and every page of the guide.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut guide: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    guide.sort();
    pages.extend(guide);
    pages.extend(["core", "io-tokio", "io-mio"].map(|c| root().join(c).join("README.md")));
    pages.retain(|p| p.exists());
    pages
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn name(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A fenced code block: its info string and its lines.
struct Block {
    info: String,
    line: usize,
    code: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => {
                    open = Some(Block {
                        info: rest.trim().to_string(),
                        line: i + 1,
                        code: Vec::new(),
                    })
                }
            }
        } else if let Some(block) = open.as_mut() {
            block.code.push(line.to_string());
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    blocks
}

/// The text outside code blocks.
fn prose(text: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, spaces to hyphens, punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_lowercase().next().unwrap_or(c)),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose(text).lines() {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#').trim();
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The targets of the inline links `[text](target)` in the prose.
fn links(text: &str) -> Vec<String> {
    let prose = prose(text);
    let mut links = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            links.push(rest[..end].to_string());
        }
    }
    links
}

#[test]
fn every_page_of_the_guide_runs_as_a_doc_test() {
    let lib = read(&root().join("tests/src/lib.rs"));
    for page in pages() {
        let relative = name(&page);
        let include = format!("include_str!(\"../../{relative}\")");
        assert!(
            lib.contains(&include),
            "{relative} is not doc-tested: add `#[doc = {include}]` to the docs module of tests/src/lib.rs"
        );
    }
}

#[test]
fn every_link_between_pages_leads_to_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("a directory").join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", name(&page)));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            if target.extension().is_some_and(|e| e == "md") {
                if !anchors(&read(&target)).contains(anchor) {
                    broken.push(format!("{}: {link}: no such heading", name(&page)));
                }
            } else {
                broken.push(format!(
                    "{}: {link}: an anchor into a non-markdown file",
                    name(&page)
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Every code block says what it is: `rust` (run as a doc test), `sh` (checked below) or
/// `text` (output, a layout, a configuration file).
#[test]
fn every_code_block_is_rust_shell_or_text() {
    let mut wrong = Vec::new();
    for page in pages() {
        for block in blocks(&read(&page)) {
            let lang = block.info.split(',').next().unwrap_or("");
            let hidden = block.code.iter().any(|l| l == "#" || l.starts_with("# "));
            let ok = match lang {
                // rustdoc hides `# ` lines, GitHub shows them: write the code whole.
                "rust" => !block.info.contains("ignore") && !hidden,
                "sh" | "text" => true,
                _ => false,
            };
            if !ok {
                wrong.push(format!("{}:{}: ```{}", name(&page), block.line, block.info));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "code blocks must be ```rust (no `ignore`: doc tests run them; no hidden `# ` lines: GitHub \
         shows them), ```sh or ```text:\n{}",
        wrong.join("\n")
    );
}

/// The shell commands, joined across continuation lines, without comments.
fn commands(block: &Block) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in &block.code {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// The `--options` of a command line.
fn options(command: &str) -> Vec<&str> {
    command
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or(w))
        .collect()
}

/// Shell commands cannot drift either: a `cargo` command is one `.ci/run` runs verbatim, or
/// one whose package, example and binary exist; `rtcmesh-signal` and `turnserver` (coturn)
/// lines name only options the binary has, or the NAT lab passes to coturn.
#[test]
fn every_shell_command_is_run_by_ci_or_names_real_options() {
    let ci = read(&root().join(".ci/run"));
    let signal = read(&root().join("io-tokio/src/bin/rtcmesh-signal.rs"));
    let natlab = read(&root().join("interop/natlab/run.sh"));
    let deploy = read(&root().join("io-tokio/tests/deploy.rs"));
    let turn_test = read(&root().join("io-tokio/tests/turn_credentials.rs"));
    let mut wrong = Vec::new();
    for page in pages() {
        for block in blocks(&read(&page)).iter().filter(|b| b.info == "sh") {
            for command in commands(block) {
                let program = command.split_whitespace().next().unwrap_or("");
                let problem = match program {
                    "cargo" => cargo_problem(&command, &ci),
                    "rtcmesh-signal" => options(&command)
                        .into_iter()
                        .find(|o| !signal.contains(&format!("\"{o}\"")))
                        .map(|o| format!("rtcmesh-signal has no option {o}")),
                    // The test-certificate recipe: io-tokio/tests/deploy.rs runs these lines.
                    "openssl" => (!deploy.contains(&format!("\"{}\"", name(&page)))).then(|| {
                        format!(
                            "io-tokio/tests/deploy.rs does not run {}'s openssl lines",
                            name(&page)
                        )
                    }),
                    "turnserver" => options(&command)
                        .into_iter()
                        .find(|o| !natlab.contains(o) && !turn_test.contains(o))
                        .map(|o| format!("neither the NAT lab nor io-tokio's turn_credentials test runs coturn with {o}")),
                    _ => Some(format!("no check knows `{program}`: add one here")),
                };
                if let Some(problem) = problem {
                    wrong.push(format!(
                        "{}:{}: {command}: {problem}",
                        name(&page),
                        block.line
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "shell commands:\n{}", wrong.join("\n"));
}

/// Whether a line of `.ci/run` is `command`, alone or followed by redirections or a pipe.
fn runs_verbatim(ci: &str, command: &str) -> bool {
    ci.lines().map(str::trim).any(|line| {
        line.strip_prefix(command)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    })
}

/// `None` when `.ci/run` runs the command verbatim, or when the package, features, example,
/// binary or test it names exists in the workspace.
fn cargo_problem(command: &str, ci: &str) -> Option<String> {
    if runs_verbatim(ci, command) {
        return None;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
    };
    // `cargo install NAME` names its package as `-p` does (other tools: not ours to check).
    let installs = words.get(1) == Some(&"install");
    let named = after("-p").or_else(|| installs.then(|| words.get(2)).flatten());
    if installs && !named.is_some_and(|n| n.starts_with("rtcmesh")) {
        return None;
    }
    let package = match named {
        Some(p) => match *p {
            "rtcmesh" => "core",
            "rtcmesh-tokio" => "io-tokio",
            "rtcmesh-mio" => "io-mio",
            "rtcmesh-tests" => "tests",
            other => return Some(format!("no package {other}")),
        },
        None => "",
    };
    let dirs: Vec<PathBuf> = if package.is_empty() {
        ["core", "io-tokio", "io-mio", "tests"]
            .iter()
            .map(|d| root().join(d))
            .collect()
    } else {
        vec![root().join(package)]
    };
    if let Some(example) = after("--example") {
        let found = dirs.iter().any(|d| {
            d.join("examples").join(format!("{example}.rs")).exists()
                || d.join("examples").join(example).join("main.rs").exists()
        });
        if !found {
            return Some(format!("no example {example}"));
        }
    }
    if let Some(bin) = after("--bin") {
        if !dirs
            .iter()
            .any(|d| d.join("src/bin").join(format!("{bin}.rs")).exists())
        {
            return Some(format!("no binary {bin}"));
        }
    }
    let features: Vec<&str> = after("--features")
        .or_else(|| after("-F"))
        .map(|list| list.split([',', ' ']).filter(|f| !f.is_empty()).collect())
        .unwrap_or_default();
    for feature in &features {
        let declared = dirs.iter().any(|d| {
            read(&d.join("Cargo.toml"))
                .split("\n[features]\n")
                .nth(1)
                .and_then(|rest| rest.split("\n[").next())
                .is_some_and(|table| {
                    table
                        .lines()
                        .any(|l| l.starts_with(&format!("{feature} =")))
                })
        });
        if !declared {
            return Some(format!("no feature {feature}"));
        }
    }
    if let Some(bin) = after("--bin") {
        // A binary with `required-features` is only built when they are given.
        for d in &dirs {
            for target in read(&d.join("Cargo.toml")).split("[[bin]]").skip(1) {
                let target = target.split("\n[").next().unwrap_or(target);
                if !target.contains(&format!("name = \"{bin}\"")) {
                    continue;
                }
                let required = target
                    .lines()
                    .find_map(|l| l.strip_prefix("required-features = "))
                    .unwrap_or("[]");
                if let Some(missing) = required
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .find(|f| !features.contains(f) && !words.contains(&"--all-features"))
                {
                    return Some(format!("{bin} needs --features {missing}"));
                }
            }
        }
    }
    if let Some(test) = after("--test") {
        if !dirs
            .iter()
            .any(|d| d.join("tests").join(format!("{test}.rs")).exists())
        {
            return Some(format!("no test {test}"));
        }
    }
    None
}

/// The `inline code` spans of the prose.
fn inline_code(text: &str) -> Vec<String> {
    prose(text)
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Commands in the prose (`cargo run …`, `cargo test …`, `cargo build …`, `cargo install …`)
/// name packages, features, examples, binaries and tests that exist (a binary with the features
/// it requires), and the benchmark's parts are ones it knows.
#[test]
fn every_cargo_command_in_the_prose_names_what_exists() {
    let ci = read(&root().join(".ci/run"));
    let bench = read(&root().join("tests/examples/bench.rs"));
    let mut wrong = Vec::new();
    for page in pages() {
        for command in inline_code(&read(&page)) {
            if ![
                "cargo run ",
                "cargo test ",
                "cargo build ",
                "cargo install ",
            ]
            .iter()
            .any(|c| command.starts_with(c))
            {
                continue;
            }
            let mut problem = cargo_problem(&command, &ci);
            if let Some((_, parts)) = command.split_once("--example bench ") {
                problem = problem.or_else(|| {
                    parts
                        .split_whitespace()
                        .find(|part| !bench.contains(&format!("\"{part}\"")))
                        .map(|part| format!("the benchmark has no part `{part}`"))
                });
            }
            if let Some(problem) = problem {
                wrong.push(format!("{}: `{command}`: {problem}", name(&page)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "commands in the prose:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_readme_s_two_commands_are_what_ci_runs() {
    let ci = read(&root().join(".ci/run"));
    let readme = read(&root().join("README.md"));
    for command in [
        "cargo run --release --example loopback_mesh",
        "cargo test --workspace",
    ] {
        assert!(readme.contains(command), "README.md shows `{command}`");
        assert!(
            runs_verbatim(&ci, command),
            ".ci/run runs `{command}` verbatim"
        );
    }
}

#[test]
fn anchors_follow_github() {
    assert_eq!(slug("Godot → rtcmesh"), "godot--rtcmesh");
    assert_eq!(
        slug("Reliability: hostile peers and careless callers"),
        "reliability-hostile-peers-and-careless-callers"
    );
    assert_eq!(
        slug("With mio: in a `Poll` you own"),
        "with-mio-in-a-poll-you-own"
    );
}

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The project's rule: every public type of a published crate shows how it is used, in an
/// example rustdoc compiles and runs (`cargo test --doc`).
#[test]
fn every_public_type_of_the_published_crates_has_a_doc_example() {
    let mut files = Vec::new();
    for dir in ["core/src", "io-tokio/src", "io-mio/src"] {
        sources(&root().join(dir), &mut files);
    }
    let mut missing = Vec::new();
    let mut types = 0;
    for file in files
        .iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "bin"))
    {
        let text = read(file);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let item = line.trim_start();
            let Some(kind) = ["pub struct ", "pub enum ", "pub trait "]
                .into_iter()
                .find(|k| item.starts_with(k))
            else {
                continue;
            };
            types += 1;
            // The item's doc comment: the `///` lines above it, past its attributes.
            let mut j = i;
            while j > 0 && lines[j - 1].trim_start().starts_with("#[") {
                j -= 1;
            }
            let mut has_example = false;
            while j > 0 && lines[j - 1].trim_start().starts_with("///") {
                j -= 1;
                has_example |= lines[j].contains("```");
            }
            if !has_example {
                let ty = item[kind.len()..]
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or("");
                missing.push(format!("{}:{}: {ty}", name(file), i + 1));
            }
        }
    }
    assert!(
        types > 60,
        "found only {types} public types: is the scan still right?"
    );
    assert!(
        missing.is_empty(),
        "public types without a doc example:\n{}",
        missing.join("\n")
    );
}
