//! The `sp-module-<id>` inputs of `/etc/nixos/flake.nix`: which modules are
//! installed, and adding one without disturbing anything a person wrote
//! (comments, other inputs, formatting). Works on the text with a small
//! Nix lexer that knows strings, comments and interpolation.

/// The installed module ids, in order of appearance. A file the lexer
/// cannot follow is an error, never a guess.
pub fn installed_modules(flake: &str) -> Result<Vec<String>, EditError> {
    let lexed = lex(flake)?;
    let code: String = flake
        .char_indices()
        .map(|(i, c)| if lexed.code[i] { c } else { ' ' })
        .collect();
    let mut ids = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("sp-module-") {
        let before = rest[..at].chars().last();
        let after = &rest[at + "sp-module-".len()..];
        let id: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let starts_identifier =
            before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if starts_identifier && !id.is_empty() && !ids.contains(&id) {
            ids.push(id.clone());
        }
        rest = &after[id.len()..];
    }
    Ok(ids)
}

#[derive(Debug, PartialEq, Eq)]
pub enum EditError {
    /// No `inputs = { ... }` or `inputs.x = ...` found.
    NoInputs,
    /// Unbalanced braces or an unterminated string or comment.
    Unparsable,
}

/// `flake` with an input `sp-module-<id>.url = "<url>";` added where the
/// other inputs are, indented like them. Unchanged if already present.
pub fn add_module_input(flake: &str, id: &str, url: &str) -> Result<String, EditError> {
    if installed_modules(flake)?.iter().any(|m| m == id) {
        return Ok(flake.to_owned());
    }
    let lexed = lex(flake)?;
    // Form 1: `inputs = { ... };` at the top level of the flake's attrset.
    if let Some(open) = find_top_level(flake, &lexed, "inputs", '=') {
        // The next code after `=` must open the attrset (`inputs = import
        // ./x.nix;` is not something to edit).
        let equals = open + flake[open..].find('=').ok_or(EditError::NoInputs)?;
        let brace = (equals + 1..flake.len())
            .find(|&i| lexed.code[i] && !flake.as_bytes()[i].is_ascii_whitespace())
            .filter(|&i| flake.as_bytes()[i] == b'{')
            .ok_or(EditError::NoInputs)?;
        let close = matching_brace(flake, &lexed, brace).ok_or(EditError::Unparsable)?;
        let indent = entry_indent(flake, brace, close);
        let line_start = flake[..close].rfind('\n').map_or(0, |i| i + 1);
        let only_space_before = flake[line_start..close].trim().is_empty();
        let entry = format!("{indent}sp-module-{id}.url = \"{url}\";\n");
        let mut out = String::with_capacity(flake.len() + entry.len() + 2);
        if only_space_before {
            out.push_str(&flake[..line_start]);
            out.push_str(&entry);
            out.push_str(&flake[line_start..]);
        } else {
            // `inputs = { a.url = "x"; };` on one line.
            out.push_str(&flake[..close]);
            out.push_str(&format!(" sp-module-{id}.url = \"{url}\"; "));
            out.push_str(&flake[close..]);
        }
        return Ok(out);
    }
    // Form 2: dotted `inputs.x.url = ...;` lines: add one after the last.
    let mut last_end = None;
    let mut search = 0;
    while let Some(at) = find_top_level_from(flake, &lexed, "inputs", '.', search) {
        let end = statement_end(&lexed, flake, at).ok_or(EditError::Unparsable)?;
        last_end = Some((at, end));
        search = end;
    }
    let (at, end) = last_end.ok_or(EditError::NoInputs)?;
    let line_start = flake[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = flake[line_start..at]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect();
    let entry = format!("inputs.sp-module-{id}.url = \"{url}\";");
    let mut out = String::with_capacity(flake.len() + entry.len() + indent.len() + 2);
    match flake[end..].find('\n').map(|i| end + i) {
        // A line of its own after the statement's line, unless that line
        // break is inside a string or comment that the line opens.
        Some(newline) if lexed.code[newline] => {
            out.push_str(&flake[..=newline]);
            out.push_str(&format!("{indent}{entry}\n"));
            out.push_str(&flake[newline + 1..]);
        }
        _ => {
            out.push_str(&flake[..end]);
            out.push_str(&format!(" {entry}"));
            out.push_str(&flake[end..]);
        }
    }
    Ok(out)
}

/// Per byte: is it code (not string or comment), and its brace depth.
struct Lexed {
    code: Vec<bool>,
    depth: Vec<u32>,
}

fn lex(text: &str) -> Result<Lexed, EditError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Code,
        Line,
        Block,
        Str,
        Indented,
    }
    let bytes = text.as_bytes();
    let mut code = vec![false; bytes.len()];
    let mut depth = vec![0u32; bytes.len()];
    // Each `${` or `{` pushes the mode to return to at its `}`.
    let mut stack: Vec<Mode> = Vec::new();
    let mut mode = Mode::Code;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        depth[i] = stack.len() as u32;
        match mode {
            Mode::Code => {
                code[i] = true;
                match b {
                    b'#' => {
                        code[i] = false;
                        mode = Mode::Line;
                    }
                    b'/' if next == Some(b'*') => {
                        code[i] = false;
                        mode = Mode::Block;
                        i += 1;
                    }
                    b'"' => mode = Mode::Str,
                    b'\'' if next == Some(b'\'') => {
                        mode = Mode::Indented;
                        i += 1;
                    }
                    b'{' => stack.push(Mode::Code),
                    b'}' => {
                        mode = stack.pop().ok_or(EditError::Unparsable)?;
                        depth[i] = stack.len() as u32;
                    }
                    _ => {}
                }
            }
            Mode::Line => {
                if b == b'\n' {
                    mode = Mode::Code;
                    code[i] = true;
                }
            }
            Mode::Block => {
                if b == b'*' && next == Some(b'/') {
                    mode = Mode::Code;
                    i += 1;
                }
            }
            Mode::Str => match b {
                b'\\' => i += 1,
                b'"' => {
                    mode = Mode::Code;
                }
                b'$' if next == Some(b'{') => {
                    stack.push(Mode::Str);
                    mode = Mode::Code;
                    i += 1;
                }
                _ => {}
            },
            Mode::Indented => match b {
                b'\'' if next == Some(b'\'') => {
                    let third = bytes.get(i + 2).copied();
                    if matches!(third, Some(b'$') | Some(b'\'') | Some(b'\\')) {
                        i += 2; // escapes: ''$ ''' ''\
                    } else {
                        mode = Mode::Code;
                        i += 1;
                    }
                }
                b'$' if next == Some(b'{') => {
                    stack.push(Mode::Indented);
                    mode = Mode::Code;
                    i += 1;
                }
                _ => {}
            },
        }
        i += 1;
    }
    if mode != Mode::Code && mode != Mode::Line || !stack.is_empty() {
        return Err(EditError::Unparsable);
    }
    Ok(Lexed { code, depth })
}

/// The byte offset of `word` followed (after spaces) by `then`, in code at
/// depth 1 (inside the flake's top attrset), not part of a longer name.
fn find_top_level(text: &str, lexed: &Lexed, word: &str, then: char) -> Option<usize> {
    find_top_level_from(text, lexed, word, then, 0)
}

fn find_top_level_from(
    text: &str,
    lexed: &Lexed,
    word: &str,
    then: char,
    from: usize,
) -> Option<usize> {
    let mut search = from;
    while let Some(found) = text[search..].find(word) {
        let at = search + found;
        search = at + word.len();
        if !lexed.code[at] || lexed.depth[at] != 1 {
            continue;
        }
        let before = text[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            continue;
        }
        let after = text[at + word.len()..].trim_start();
        if after.starts_with(then) {
            return Some(at);
        }
    }
    None
}

/// The `}` closing the `{` at `open`: the first `}` in code back at the
/// opening brace's depth (a `}` is recorded at its depth after closing).
fn matching_brace(text: &str, lexed: &Lexed, open: usize) -> Option<usize> {
    let level = lexed.depth[open];
    let bytes = text.as_bytes();
    (open + 1..bytes.len()).find(|&i| bytes[i] == b'}' && lexed.code[i] && lexed.depth[i] == level)
}

/// The end (after `;`) of the statement starting at `at`, at its depth.
fn statement_end(lexed: &Lexed, text: &str, at: usize) -> Option<usize> {
    let level = lexed.depth[at];
    let bytes = text.as_bytes();
    (at..bytes.len())
        .find(|&i| bytes[i] == b';' && lexed.code[i] && lexed.depth[i] == level)
        .map(|i| i + 1)
}

/// The indentation of the entries between `open` and `close`, or the
/// closing line's indentation plus two spaces.
fn entry_indent(text: &str, open: usize, close: usize) -> String {
    let inner = &text[open + 1..close];
    for line in inner.lines().skip(1) {
        if !line.trim().is_empty() {
            return line.chars().take_while(|c| c.is_whitespace()).collect();
        }
    }
    let line_start = text[..close].rfind('\n').map_or(0, |i| i + 1);
    let closing: String = text[line_start..close]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect();
    format!("{closing}  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAND_WRITTEN: &str = r#"{
  description = "My server";   # keep this comment

  inputs = {
    selfprivacy-nixos-config.url = "git+https://example.org/config.git?ref=flakes";
    # sp-module-commented.url = "disabled";
    sp-module-gitea = { url = "git+https://example.org/c.git?dir=sp-modules/gitea"; };
    weird = { url = "path:./x"; flake = false; /* } tricky */ };
  };

  outputs = { self, selfprivacy-nixos-config, ... }@inputs: {
    note = ''
      a } brace in ''${an indented} string
    '';
    nixosConfigurations = selfprivacy-nixos-config.outputs.make { inherit inputs; s = "${"}"}"; };
  };
}
"#;

    #[test]
    fn installed_modules_skip_comments_and_strings() {
        assert_eq!(installed_modules(HAND_WRITTEN).unwrap(), ["gitea"]);
        assert_eq!(
            installed_modules("{ x = \"unterminated; }"),
            Err(EditError::Unparsable)
        );
    }

    #[test]
    fn adding_an_input_keeps_everything_else() {
        let edited = add_module_input(
            HAND_WRITTEN,
            "notes",
            "git+https://example.org/c.git?dir=sp-modules/notes",
        )
        .unwrap();
        assert_eq!(installed_modules(&edited).unwrap(), ["gitea", "notes"]);
        let added = "    sp-module-notes.url = \"git+https://example.org/c.git?dir=sp-modules/notes\";\n  };\n\n  outputs";
        assert!(edited.contains(added), "{edited}");
        // Nothing else changed: removing the added line gives the original.
        let removed = edited.replace(
            "    sp-module-notes.url = \"git+https://example.org/c.git?dir=sp-modules/notes\";\n",
            "",
        );
        assert_eq!(removed, HAND_WRITTEN);
        // Idempotent.
        assert_eq!(add_module_input(&edited, "notes", "x").unwrap(), edited);
    }

    #[test]
    fn dotted_inputs_get_a_dotted_line() {
        let flake = "{\n  inputs.nixpkgs.url = \"github:x/y\";\n  inputs.sp-module-a.url = \"u\";\n  outputs = _: { };\n}\n";
        let edited = add_module_input(flake, "b", "v").unwrap();
        assert_eq!(
            edited,
            "{\n  inputs.nixpkgs.url = \"github:x/y\";\n  inputs.sp-module-a.url = \"u\";\n  inputs.sp-module-b.url = \"v\";\n  outputs = _: { };\n}\n"
        );
    }

    #[test]
    fn an_input_after_a_line_that_opens_a_string_stays_code() {
        // Found by the generated tests: the entry went after the line
        // break, which was inside the string.
        let flake =
            "{\n  inputs.a.url = \"u\"; note = ''\n    text\n  '';\n  outputs = _: { };\n}\n";
        let edited = add_module_input(flake, "b", "v").unwrap();
        assert_eq!(installed_modules(&edited).unwrap(), ["b"]);
        assert_eq!(
            edited,
            flake.replace("\"u\";", "\"u\"; inputs.sp-module-b.url = \"v\";")
        );
    }

    #[test]
    fn broken_or_inputless_files_are_refused() {
        let imported =
            "{\n  inputs = import ./inputs.nix; # { not here\n  outputs = { self }: { };\n}\n";
        assert_eq!(
            add_module_input(imported, "a", "u"),
            Err(EditError::NoInputs)
        );
        assert_eq!(
            add_module_input("{ outputs = _: {}; }", "a", "u"),
            Err(EditError::NoInputs)
        );
        assert_eq!(
            add_module_input("{ inputs = { ", "a", "u"),
            Err(EditError::Unparsable)
        );
        assert_eq!(
            add_module_input("{ inputs = { x = \"unterminated; }; }", "a", "u"),
            Err(EditError::Unparsable)
        );
    }

    mod generated {
        use super::super::*;
        use proptest::prelude::*;

        /// Text that must not count as code: comments and strings holding
        /// braces, quotes and input-like words.
        fn noise() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                "[a-z {}\";=.]{0,12}".prop_map(|t| format!("# {t} sp-module-fake.url = \"x\";")),
                "[a-z {};=.]{0,12}".prop_map(|t| format!("/* {t} }} {{ */")),
                Just("x = \"${\"}\"} \\\" {\";".to_owned()),
                Just("y = ''\n    a } ''${b} ''' c\n  '';".to_owned()),
            ]
        }

        /// An input's name: installed modules among others.
        fn input_name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z][a-z0-9-]{0,8}",
                "[a-z][a-z0-9]{0,6}".prop_map(|id| format!("sp-module-{id}")),
            ]
        }

        #[derive(Debug, Clone)]
        enum Form {
            Block { one_line: bool },
            Dotted,
        }

        /// A flake.nix as people write it: inputs in a block or as dotted
        /// lines, any indentation, comments and strings around them.
        fn flake() -> impl Strategy<Value = String> {
            let form = prop_oneof![
                any::<bool>().prop_map(|one_line| Form::Block { one_line }),
                Just(Form::Dotted),
            ];
            let indent = prop_oneof![Just("  "), Just("    "), Just("\t")];
            (
                form,
                indent,
                prop::collection::vec((input_name(), "[a-z:/.?=&+-]{1,20}", noise()), 0..5),
                noise(),
                noise(),
            )
                .prop_filter(
                    "the dotted form needs an input",
                    |(form, _, inputs, ..)| !matches!(form, Form::Dotted) || !inputs.is_empty(),
                )
                .prop_map(|(form, indent, inputs, head, tail)| {
                    let mut text = format!("{{\n{indent}description = \"a {{ server\"; {head}\n");
                    match form {
                        Form::Block { one_line: true } => {
                            let entries: String = inputs
                                .iter()
                                .map(|(name, url, _)| format!(" {name}.url = \"{url}\";"))
                                .collect();
                            text.push_str(&format!("{indent}inputs = {{{entries} }};\n"));
                        }
                        Form::Block { one_line: false } => {
                            text.push_str(&format!("{indent}inputs = {{\n"));
                            for (name, url, noise) in &inputs {
                                text.push_str(&format!(
                                    "{indent}{indent}{name}.url = \"{url}\"; {noise}\n"
                                ));
                            }
                            text.push_str(&format!("{indent}}};\n"));
                        }
                        Form::Dotted => {
                            for (name, url, noise) in &inputs {
                                text.push_str(&format!(
                                    "{indent}inputs.{name}.url = \"{url}\"; {noise}\n"
                                ));
                            }
                        }
                    }
                    text.push_str(&format!(
                        "{indent}outputs = {{ self, ... }}@inputs: {{\n{indent}{indent}{tail}\n{indent}}};\n}}\n"
                    ));
                    text
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Adding a module lists it after the others, adding it again
            /// changes nothing, and taking the added entry out gives back
            /// the file exactly as it was.
            #[test]
            fn adding_round_trips(
                flake in flake(),
                id in "[a-z][a-z0-9-]{0,10}",
                url in "[a-z:/.?=&+-]{1,30}",
            ) {
                let before = installed_modules(&flake).unwrap();
                prop_assume!(!before.contains(&id));
                let edited = add_module_input(&flake, &id, &url).unwrap();
                let after = installed_modules(&edited).unwrap();
                let mut expected = before.clone();
                expected.push(id.clone());
                prop_assert_eq!(after, expected);
                prop_assert_eq!(&add_module_input(&edited, &id, "other").unwrap(), &edited);
                let entry = format!("sp-module-{id}.url = \"{url}\";");
                let dotted = format!("inputs.{entry}");
                let lines: Vec<&str> = edited.split_inclusive('\n').collect();
                let own_lines: Vec<usize> = (0..lines.len())
                    .filter(|&i| lines[i].trim() == entry || lines[i].trim() == dotted)
                    .collect();
                prop_assert!(own_lines.len() <= 1, "{}", edited);
                let removed = if let [own] = own_lines[..] {
                    // On a line of its own, indented.
                    prop_assert!(lines[own].starts_with(char::is_whitespace), "{:?}", lines[own]);
                    lines
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != own)
                        .map(|(_, l)| *l)
                        .collect()
                } else if edited.contains(&format!(" {entry} }}")) {
                    // In a one-line block.
                    edited.replacen(&format!(" {entry} "), "", 1)
                } else {
                    // After a statement whose line goes on in a string.
                    edited.replacen(&format!(" {dotted}"), "", 1)
                };
                prop_assert_eq!(removed, flake);
            }
        }
    }
}
