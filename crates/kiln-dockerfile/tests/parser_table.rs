//! Table-driven parser tests: small inputs with the exact outcome (error
//! message and location, or the parsed value), and `--mount` parsing.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kiln_dockerfile::mount::{parse_mount, MountType, Sharing};
use kiln_dockerfile::*;

/// Parses `FROM alpine\n` + `body` and returns the last instruction kind.
fn last(body: &str) -> InstructionKind {
    let df = parse("Dockerfile", &format!("FROM alpine\n{body}\n"))
        .unwrap_or_else(|e| panic!("{body:?} failed: {e}"));
    df.instructions.last().unwrap().kind.clone()
}

/// The (line, column, message) of the error for `text`.
fn err(text: &str) -> (usize, usize, String) {
    let e = parse("Dockerfile", text).expect_err(text);
    (e.line, e.column, e.message)
}

#[test]
fn error_display_is_located_with_caret() {
    let e = parse("dir/Dockerfile", "FROM alpine\n  RUN --nope x\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "dir/Dockerfile:2:7: unknown flag: nope\n  |\n2 |   RUN --nope x\n  |       ^"
    );
    assert_eq!(e.file, "dir/Dockerfile");
    assert_eq!(e.source_line, "  RUN --nope x");
}

#[test]
fn errors_carry_exact_locations_and_messages() {
    let cases: &[(&str, (usize, usize, &str))] = &[
        ("", (1, 1, "file with no instructions")),
        ("\n\n# c\n", (1, 1, "file with no instructions")),
        ("ARG a\nARG b\n", (1, 1, "dockerfile contains no stages to build")),
        ("LABEL a=b\nFROM x\n", (1, 1, "no build stage in current context")),
        ("ENV a=b\n", (1, 1, "no build stage in current context")),
        ("FROM a\nFOO\n", (2, 1, "unknown instruction: FOO (did you mean FROM?)")),
        ("FROM a\nWORKDIRR /x\n", (2, 1, "unknown instruction: WORKDIRR (did you mean WORKDIR?)")),
        ("FROM a\nexpse 80\n", (2, 1, "unknown instruction: expse (did you mean expose?)")),
        ("FROM a\nRUN --mount=type=cache,sharing=x,target=/c true\n", (2, 5, "unsupported sharing value \"x\"")),
        ("FROM a\nRUN --mount=type=secret true\n", (2, 5, "invalid secret mount. one of source, target required")),
        ("FROM a\nRUN --mount=target=/x,size=1m true\n", (2, 5, "unexpected key 'size' for mount type 'bind'")),
        ("FROM a\nRUN --mount=xyzzy=bar true\n", (2, 5, "unexpected key 'xyzzy' in 'xyzzy=bar'")),
        ("FROM a\nRUN --network true\n", (2, 5, "missing a value on flag: network")),
        ("FROM a\nCOPY --exclude a b\n", (2, 6, "missing a value on flag: exclude")),
        ("FROM a\nCOPY --parents=maybe a b\n", (2, 6, "expecting boolean value for flag parents, not: maybe")),
        ("FROM a\nADD --unpack=1 a b\n", (2, 5, "expecting boolean value for flag unpack, not: 1")),
        ("FROM a\nADD --keep-git-dir --keep-git-dir a b\n", (2, 20, "duplicate flag specified: keep-git-dir")),
        ("FROM a\nADD --checksum a b\n", (2, 5, "missing a value on flag: checksum")),
        ("FROM a\nUSER --x u\n", (2, 6, "unknown flag: x")),
        ("FROM a\nWORKDIR --x /a\n", (2, 9, "unknown flag: x")),
        ("FROM a\nEXPOSE --x 80\n", (2, 8, "unknown flag: x")),
        ("FROM a\nMAINTAINER --x m\n", (2, 12, "unknown flag: x")),
        ("FROM a\nARG --x a\n", (2, 5, "unknown flag: x")),
        ("FROM a\nLABEL --x a=b\n", (2, 7, "unknown flag: x")),
        ("FROM a\nSHELL --x [\"a\"]\n", (2, 7, "unknown flag: x")),
        ("FROM a\nENTRYPOINT --x\n", (2, 12, "unknown flag: x")),
        ("FROM a\nONBUILD --x RUN a\n", (2, 9, "unknown flag: x")),
        ("FROM a\nONBUILD RUN --x a\n", (2, 13, "unknown flag: x")),
        ("FROM a\nENV a\n", (2, 5, "ENV must have two arguments")),
        ("FROM a\nENV\n", (2, 1, "ENV requires at least one argument")),
        ("FROM a\nENV =b\n", (2, 5, "ENV names can not be blank")),
        ("FROM a\nENV a=1 \\\n  b\n", (3, 3, "Syntax error - can't find = in \"b\". Must be of the form: name=value")),
        ("FROM a\nARG a=1 =2\n", (2, 9, "ARG names can not be blank")),
        ("FROM a\nCMD [\"a\", true]\n", (2, 5, "when using JSON array syntax, arrays must be comprised of strings only")),
        ("FROM a\nVOLUME [\"a\", {}]\n", (2, 8, "when using JSON array syntax, arrays must be comprised of strings only")),
        ("FROM a\nCOPY [\"a\", 2]\n", (2, 6, "when using JSON array syntax, arrays must be comprised of strings only")),
        ("FROM a\nHEALTHCHECK --timeout=1x CMD a\n", (2, 13, "time: unknown unit \"x\" in duration \"1x\"")),
        ("FROM a\nHEALTHCHECK --retries=99999999999 CMD a\n", (2, 13, "strconv.ParseInt: parsing \"99999999999\": value out of range")),
        ("FROM a\nHEALTHCHECK --start-interval=0.5ms CMD a\n", (2, 13, "Interval \"start-interval\" cannot be less than 1ms")),
        ("FROM a\nHEALTHCHECK FOO\n", (2, 13, "Unknown type \"FOO\" in HEALTHCHECK (try CMD)")),
        ("FROM a\nRUN <<EOF\n", (2, 5, "unterminated heredoc EOF")),
        ("FROM a\nCOPY <<-X /y\n\tX \n", (2, 6, "unterminated heredoc X")),
        ("FROM a\nRUN \\\n  cat <<EOF\nbody\n", (3, 7, "unterminated heredoc EOF")),
        ("FROM a\nADD x <<EOF\nEOF\n", (2, 7, "ADD cannot accept a heredoc as a destination")),
        ("FROM a AS B@d\n", (1, 11, "invalid name for build stage: \"B@d\", name can't start with a number or contain symbols")),
        ("FROM a AS _x\n", (1, 11, "invalid name for build stage: \"_x\", name can't start with a number or contain symbols")),
        ("# escape=``\nFROM a\n", (1, 1, "invalid escape token '``' does not match ` or \\")),
        ("#escape=`\n#ESCAPE=\\\nFROM a\n", (2, 1, "only one escape parser directive can be used")),
        ("FROM a\nCOPY\tonly\n", (2, 1, "COPY requires at least two arguments, but only one was provided. Destination could not be determined")),
    ];
    for (text, (line, col, msg)) in cases {
        assert_eq!(err(text), (*line, *col, msg.to_string()), "input {text:?}");
    }
}

#[test]
fn commands_exec_or_shell() {
    let cases: &[(&str, Command)] = &[
        (
            "CMD [\"a\",\"b\"]",
            Command::Exec(vec!["a".into(), "b".into()]),
        ),
        ("CMD  [ \"a\" ]  ", Command::Exec(vec!["a".into()])),
        ("CMD [\"a\\\"q\"]", Command::Exec(vec!["a\"q".into()])),
        ("CMD [a]", Command::Shell("[a]".into())),
        ("CMD [\"a\"", Command::Shell("[\"a\"".into())),
        ("CMD [\"a\"] x", Command::Shell("[\"a\"] x".into())),
        ("CMD echo $X", Command::Shell("echo $X".into())),
        ("CMD", Command::Shell(String::new())),
        ("CMD \\\n  [\"x\"]", Command::Exec(vec!["x".into()])),
    ];
    for (line, want) in cases {
        match last(line) {
            InstructionKind::Cmd(c) => assert_eq!(&c, want, "{line:?}"),
            other => panic!("{line:?} gave {other:?}"),
        }
    }
    match last("ENTRYPOINT exec app") {
        InstructionKind::Entrypoint(c) => assert_eq!(c, Command::Shell("exec app".into())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn env_and_label_pairs() {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: v.into(),
    };
    let cases: &[(&str, Vec<KeyValue>)] = &[
        ("ENV a=\"x y\" b=c", vec![kv("a", "\"x y\""), kv("b", "c")]),
        ("ENV a b c", vec![kv("a", "b c")]),
        ("ENV a=b\\ c d=e", vec![kv("a", "b\\ c"), kv("d", "e")]),
        ("ENV a='$b c'", vec![kv("a", "'$b c'")]),
        ("ENV a==b", vec![kv("a", "=b")]),
        ("ENV a=\"\"", vec![kv("a", "\"\"")]),
        ("ENV a=x\\", vec![kv("a", "x")]),
        ("ENV a=1 \\\n b=2", vec![kv("a", "1"), kv("b", "2")]),
    ];
    for (line, want) in cases {
        match last(line) {
            InstructionKind::Env(got) => assert_eq!(&got, want, "{line:?}"),
            other => panic!("{line:?} gave {other:?}"),
        }
    }
    match last("LABEL \"a b\"=c") {
        InstructionKind::Label(got) => assert_eq!(got, vec![kv("\"a b\"", "c")]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn args_several_per_line() {
    match last("ARG a=1 b c=\"x y\" d=") {
        InstructionKind::Arg(a) => {
            let got: Vec<(&str, Option<&str>)> = a
                .iter()
                .map(|d| (d.name.as_str(), d.default.as_deref()))
                .collect();
            assert_eq!(
                got,
                [
                    ("a", Some("1")),
                    ("b", None),
                    ("c", Some("\"x y\"")),
                    ("d", Some(""))
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn spans_and_originals() {
    let df = parse(
        "Dockerfile",
        "# syntax=x\n\nFROM a AS b\n  RUN echo 1 \\\n   # c\n   echo 2\nCOPY <<EOF /x\nbody\nEOF\nCMD x\n",
    )
    .unwrap();
    let got: Vec<(usize, usize, &str)> = df
        .instructions
        .iter()
        .map(|i| (i.span.line, i.span.column, i.original.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (3, 1, "FROM a AS b"),
            (4, 3, "RUN echo 1    echo 2"),
            (7, 1, "COPY <<EOF /x"),
            (10, 1, "CMD x"),
        ]
    );
    let stages = df.stages();
    assert_eq!(stages.len(), 1);
    assert_eq!(stages[0].instructions.len(), 3);
}

#[test]
fn stage_names_lowercased_and_validated() {
    for (line, want) in [
        ("FROM x AS Build", "build"),
        ("FROM x as a.b-c_1", "a.b-c_1"),
        ("FROM x aS Z", "z"),
    ] {
        let df = parse("D", line).unwrap();
        match &df.instructions[0].kind {
            InstructionKind::From(f) => assert_eq!(f.name.as_deref(), Some(want)),
            other => panic!("{other:?}"),
        }
    }
    for bad in [
        "FROM x AS 9a",
        "FROM x AS a/b",
        "FROM x AS a:b",
        "FROM x AS -a",
    ] {
        assert!(parse("D", bad).is_err(), "{bad}");
    }
}

#[test]
fn heredoc_word_recognition_for_executors() {
    assert_eq!(parser::heredoc_opener("<<EOF").unwrap().name, "EOF");
    assert!(parser::heredoc_opener("cat <<EOF").is_none());
    let h = parser::heredoc_opener("<<-'X'").unwrap();
    assert!(h.strip_tabs && !h.expand);
}

#[test]
fn healthcheck_values() {
    match last("HEALTHCHECK --interval=1m --retries=+2 --timeout= CMD [\"a\"]") {
        InstructionKind::Healthcheck(Healthcheck::Check {
            command,
            interval,
            timeout,
            retries,
            ..
        }) => {
            assert_eq!(command, Command::Exec(vec!["a".into()]));
            assert_eq!(interval.as_deref(), Some("1m"));
            assert_eq!(timeout, None);
            assert_eq!(retries, Some(2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn never_panics_on_awkward_inputs() {
    let inputs = [
        "\\", "FROM a\n\\\n", "FROM a\nRUN <<", "FROM a\nRUN <<-", "FROM a\nRUN 99999999999999<<E\nE\n",
        "FROM a\nRUN --", "FROM a\nRUN --=", "FROM a\nRUN \"--x", "FROM a\nCOPY --from=\"", "FROM a\nENV \"",
        "FROM a\nENV a=\"\\", "FROM a\nHEALTHCHECK --interval=9999999999999999999999h CMD a", "\u{feff}",
        "FROM a\nONBUILD", "FROM a\nONBUILD ONBUILD", "FROM a\nCMD [", "FROM a\nCMD [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "FROM a\r", "\r\n\r\n", "# escape=`\nFROM a\nRUN `", "FROM \u{3000}a", "FROM a\nLABEL \u{a0}=x",
        "FROM a\nRUN --mount=\"\" x", "FROM a\nRUN --mount=, x",
    ];
    for input in inputs {
        if let Err(e) = parse("D", input) {
            assert!(e.line >= 1 && e.column >= 1, "{input:?}: {e:?}");
            let _ = e.to_string();
        }
    }
}

#[test]
fn mount_defaults() {
    let m = parse_mount("target=/src").unwrap();
    assert_eq!(m.kind, MountType::Bind);
    assert!(m.readonly);
    assert_eq!(m.effective_mode(), None);

    let m = parse_mount("type=cache,target=/root/.cache").unwrap();
    assert_eq!(m.kind, MountType::Cache);
    assert!(!m.readonly);
    assert_eq!(m.sharing, Some(Sharing::Shared));
    assert_eq!(m.cache_id(), Some("/root/.cache"));
    assert_eq!(m.effective_mode(), Some(0o755));

    let m = parse_mount("type=cache,id=go,target=/go,sharing=LOCKED,mode=0700,uid=1000,gid=1000,from=base,source=/seed,ro").unwrap();
    assert_eq!(m.sharing, Some(Sharing::Locked));
    assert_eq!(m.cache_id(), Some("go"));
    assert_eq!(
        (m.mode, m.uid, m.gid),
        (Some(0o700), Some(1000), Some(1000))
    );
    assert_eq!(
        (m.from.as_deref(), m.source.as_deref()),
        (Some("base"), Some("/seed"))
    );
    assert!(m.readonly);

    let m = parse_mount("type=secret,id=aws").unwrap();
    assert_eq!(m.secret_id().as_deref(), Some("aws"));
    assert_eq!(m.secret_target().as_deref(), Some("/run/secrets/aws"));
    assert!(m.readonly && !m.required);
    assert_eq!(m.effective_mode(), Some(0o400));

    let m = parse_mount("type=secret,target=/root/.npmrc,required").unwrap();
    assert_eq!(m.secret_id().as_deref(), Some(".npmrc"));
    assert_eq!(m.secret_target().as_deref(), Some("/root/.npmrc"));
    assert!(m.required);

    let m = parse_mount("type=secret,id=tok,env=TOKEN").unwrap();
    assert_eq!(m.env.as_deref(), Some("TOKEN"));
    assert_eq!(m.secret_target(), None);

    let m = parse_mount("type=secret,src=sec,required=false").unwrap();
    assert_eq!(m.secret_id().as_deref(), Some("sec"));
    assert!(!m.required);

    let m = parse_mount("type=ssh").unwrap();
    assert_eq!(m.ssh_id(), "default");
    assert_eq!(m.ssh_target(0), "/run/buildkit/ssh_agent.0");
    assert_eq!(m.ssh_target(2), "/run/buildkit/ssh_agent.2");
    assert_eq!(m.effective_mode(), Some(0o600));

    let m = parse_mount("type=ssh,id=gh,dst=/s.sock,required=true,mode=0666").unwrap();
    assert_eq!((m.ssh_id(), m.ssh_target(0).as_str()), ("gh", "/s.sock"));
    assert!(m.required);

    let m = parse_mount("type=tmpfs,target=/t,size=64m").unwrap();
    assert_eq!(m.size, Some(64 << 20));
    assert!(!m.readonly);

    let m = parse_mount("type=bind,source=x,destination=/y,rw").unwrap();
    assert!(!m.readonly);
    let m = parse_mount("TYPE=BIND,target=/y,readwrite=true").unwrap();
    assert!(!m.readonly);
    let m = parse_mount("target=/y,readonly=false").unwrap();
    assert!(!m.readonly);
    let m = parse_mount("\"target=/a,b\",type=bind").unwrap();
    assert_eq!(m.target.as_deref(), Some("/a,b"));
}

#[test]
fn mount_errors() {
    let cases = [
        ("type=foo", "unsupported mount type \"foo\""),
        (
            "type=cahce",
            "unsupported mount type \"cahce\" (did you mean cache?)",
        ),
        ("type=CACHX", "unsupported mount type \"CACHX\""),
        ("target", "invalid field 'target' must be a key=value pair"),
        ("", "invalid field '' must be a key=value pair"),
        (
            "type=cache,,target=/x",
            "invalid field '' must be a key=value pair",
        ),
        (
            "required,type=secret,id=a",
            "unexpected key 'required' for mount type 'bind'",
        ),
        (
            "type=cache,required=true",
            "unexpected key 'required' for mount type 'cache'",
        ),
        (
            "type=cache,size=1",
            "unexpected key 'size' for mount type 'cache'",
        ),
        ("type=tmpfs,size=big", "invalid value for size: big"),
        (
            "sharing=locked,type=cache",
            "invalid cache sharing set for bind mount",
        ),
        (
            "type=cache,sharing=none",
            "unsupported sharing value \"none\"",
        ),
        ("type=cache,mode=0899", "invalid value 0899 for mode"),
        ("type=cache,uid=-1", "invalid value -1 for uid"),
        ("type=cache,gid=x", "invalid value x for gid"),
        (
            "type=bind,target=/x,mode=0644",
            "mode not allowed for \"bind\" type mounts",
        ),
        (
            "type=tmpfs,target=/x,uid=1",
            "uid not allowed for \"tmpfs\" type mounts",
        ),
        (
            "type=bind,target=/x,gid=1",
            "gid not allowed for \"bind\" type mounts",
        ),
        ("type=bind,ro=maybe", "invalid value for ro: maybe"),
        ("type=bind,rw=2", "invalid value for rw: 2"),
        (
            "type=secret",
            "invalid secret mount. one of source, target required",
        ),
        (
            "type=secret,id=a,from=b",
            "secret mount should not have a from",
        ),
        (
            "type=secret,id=a,source=b",
            "both source and id can't be set",
        ),
        ("type=ssh,source=x", "ssh does not support source"),
        (
            "type=cache,targt=/x",
            "unexpected key 'targt' in 'targt=/x' (did you mean target?)",
        ),
        (
            "type=cache, target=/x",
            "unexpected key ' target' in ' target=/x' (did you mean target?)",
        ),
        (
            "target=/a\"b",
            "failed to parse csv mounts: bare \" in non-quoted-field",
        ),
        (
            "\"target=/a",
            "failed to parse csv mounts: extraneous or missing \" in quoted-field",
        ),
    ];
    for (spec, msg) in cases {
        assert_eq!(
            parse_mount(spec).map(|_| ()).unwrap_err().to_string(),
            msg,
            "spec {spec:?}"
        );
    }
}

#[test]
fn empty_string_flags_mean_unset() {
    match last("COPY --from= --chown= --chmod= a b") {
        InstructionKind::Copy(c) => {
            assert_eq!((c.from, c.chown, c.chmod), (None, None, None));
        }
        other => panic!("{other:?}"),
    }
    match last("ADD --checksum= a b") {
        InstructionKind::Add(c) => assert_eq!(c.checksum, None),
        other => panic!("{other:?}"),
    }
    let df = parse("D", "FROM --platform= a").unwrap();
    match &df.instructions[0].kind {
        InstructionKind::From(f) => assert_eq!(f.platform, None),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err("FROM a\nRUN --network= x\n"),
        (2, 5, "unsupported network mode \"\"".to_string())
    );
}

#[test]
fn continuation_rules() {
    let runs = |text: &str| -> Vec<String> {
        parse("D", text)
            .unwrap()
            .instructions
            .iter()
            .filter_map(|i| match &i.kind {
                InstructionKind::Run(r) => match &r.command {
                    Command::Shell(s) => Some(s.clone()),
                    Command::Exec(v) => Some(v.join("|")),
                },
                _ => None,
            })
            .collect()
    };
    assert_eq!(runs("FROM a\nRUN a\\\nb\n"), ["ab"]);
    assert_eq!(runs("FROM a\nRUN a \\ \t \n b\n"), ["a  b"]);
    assert_eq!(runs("FROM a\nRUN a\\\\\nRUN b\n"), ["a\\\\", "b"]);
    assert_eq!(runs("FROM a\nRUN a \\\n#c\n\n b \\\n c\n"), ["a  b  c"]);
    assert_eq!(
        runs("# escape=`\nFROM a\nRUN a `\n b\\\nRUN c\n"),
        ["a  b\\", "c"]
    );
    assert_eq!(runs("FROM a\nRUN a # b \\\n c\n"), ["a # b  c"]);
    assert_eq!(runs("FROM a\nRUN [\"a\", \\\n \"b\"]\n"), ["a|b"]);
}

/// One valid line per instruction, in every keyword spelling.
const SAMPLES: &[(&str, &str)] = &[
    ("ADD", "a b"),
    ("ARG", "a"),
    ("CMD", "a"),
    ("COPY", "a b"),
    ("ENTRYPOINT", "a"),
    ("ENV", "a=b"),
    ("EXPOSE", "80"),
    ("HEALTHCHECK", "CMD a"),
    ("LABEL", "a=b"),
    ("MAINTAINER", "m"),
    ("ONBUILD", "RUN a"),
    ("RUN", "a"),
    ("SHELL", "[\"sh\", \"-c\"]"),
    ("STOPSIGNAL", "9"),
    ("USER", "u"),
    ("VOLUME", "/v"),
    ("WORKDIR", "/w"),
];

#[test]
fn every_keyword_in_any_case() {
    for (kw, args) in SAMPLES {
        let lower = kw.to_lowercase();
        let mut mixed: String = String::new();
        for (i, c) in kw.chars().enumerate() {
            mixed.push(if i % 2 == 0 {
                c
            } else {
                c.to_ascii_lowercase()
            });
        }
        for spelling in [kw.to_string(), lower, mixed] {
            let kind = last(&format!("{spelling} {args}"));
            assert_eq!(kind.keyword(), *kw, "{spelling}");
        }
    }
}

#[test]
fn every_instruction_rejects_unknown_flags_at_the_flag() {
    for (kw, args) in SAMPLES {
        if *kw == "STOPSIGNAL" {
            // Docker splits flags off STOPSIGNAL but never checks them.
            assert_eq!(
                last("STOPSIGNAL --x=1 9"),
                InstructionKind::Stopsignal("9".into())
            );
            continue;
        }
        let text = format!("FROM a\n{kw} --zzz=1 {args}\n");
        let want_col = kw.len() + 2;
        assert_eq!(
            err(&text),
            (2, want_col, "unknown flag: zzz".to_string()),
            "{kw}"
        );
    }
}

#[test]
fn every_instruction_needs_a_stage() {
    for (kw, args) in SAMPLES {
        let text = format!("{kw} {args}\nFROM a\n");
        if *kw == "ARG" {
            assert!(parse("D", &text).is_ok());
        } else {
            assert_eq!(
                err(&text),
                (1, 1, "no build stage in current context".to_string()),
                "{kw}"
            );
        }
    }
}

#[test]
fn flag_sets_per_instruction() {
    // (instruction line, flag that must be accepted)
    let accepted = [
        "FROM --platform=linux/arm64 a",
        "RUN --mount=type=tmpfs,target=/t --mount=type=ssh a",
        "RUN --network=default a",
        "RUN --security=sandbox a",
        "COPY --from=0 a b",
        "COPY --chown=a:b a b",
        "COPY --chmod=u+x a b",
        "COPY --link a b",
        "COPY --parents=true a b",
        "COPY --exclude=a --exclude=b a b",
        "ADD --chown=1 a b",
        "ADD --chmod=600 a b",
        "ADD --link=false a b",
        "ADD --exclude=x a b",
        "ADD --keep-git-dir a b",
        "ADD --checksum=sha256:00 a b",
        "ADD --unpack=true a b",
        "HEALTHCHECK --interval=1s CMD a",
        "HEALTHCHECK --timeout=1s CMD a",
        "HEALTHCHECK --start-period=1s CMD a",
        "HEALTHCHECK --start-interval=1s CMD a",
        "HEALTHCHECK --retries=0 CMD a",
    ];
    for line in accepted {
        let text = if line.starts_with("FROM") {
            line.to_string()
        } else {
            format!("FROM a\n{line}")
        };
        if let Err(e) = parse("D", &text) {
            panic!("{line}: {e}");
        }
    }
    let rejected = [
        ("FROM --from=x a", "unknown flag: from"),
        ("RUN --from=x a", "unknown flag: from"),
        ("RUN --link a", "unknown flag: link"),
        ("COPY --unpack a b", "unknown flag: unpack"),
        ("COPY --keep-git-dir a b", "unknown flag: keep-git-dir"),
        ("ADD --from=x a b", "unknown flag: from"),
        ("HEALTHCHECK --platform=x CMD a", "unknown flag: platform"),
        ("COPY --link --link a b", "duplicate flag specified: link"),
        (
            "COPY --chmod=1 --chmod=2 a b",
            "duplicate flag specified: chmod",
        ),
        (
            "COPY --chown=1 --chown=2 a b",
            "duplicate flag specified: chown",
        ),
        (
            "RUN --security=insecure --security=sandbox a",
            "duplicate flag specified: security",
        ),
        ("COPY --Link a b", "unknown flag: Link"),
    ];
    for (line, msg) in rejected {
        let text = if line.starts_with("FROM") {
            line.to_string()
        } else {
            format!("FROM a\n{line}")
        };
        let e = parse("D", &text).expect_err(line);
        assert!(e.message.starts_with(msg), "{line}: {}", e.message);
    }
}

#[test]
fn copy_sources_and_destination() {
    let cases: &[(&str, &[&str], &str, bool)] = &[
        ("COPY a b", &["a"], "b", false),
        ("COPY a b c d/", &["a", "b", "c"], "d/", false),
        ("COPY  a\tb ", &["a"], "b", false),
        ("COPY [\"a\", \"b\", \"c\"]", &["a", "b"], "c", true),
        ("COPY --from=x [\"a b\", \"c\"]", &["a b"], "c", true),
        ("COPY $SRC ${DEST}", &["$SRC"], "${DEST}", false),
        ("COPY [\"a\"] b", &["[\"a\"]"], "b", false),
        ("ADD https://x/y.tgz /", &["https://x/y.tgz"], "/", false),
    ];
    for (line, sources, dest, json) in cases {
        let c = match last(line) {
            InstructionKind::Copy(c) | InstructionKind::Add(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.sources, *sources, "{line}");
        assert_eq!(c.dest, *dest, "{line}");
        assert_eq!(c.json_form, *json, "{line}");
    }
}

#[test]
fn volume_expose_user_workdir_values() {
    assert_eq!(
        last("VOLUME /a  /b\t/c"),
        InstructionKind::Volume(vec!["/a".into(), "/b".into(), "/c".into()])
    );
    assert_eq!(
        last("VOLUME [\" /a \"]"),
        InstructionKind::Volume(vec!["/a".into()])
    );
    assert_eq!(
        last("EXPOSE 80/tcp $PORT"),
        InstructionKind::Expose(vec!["80/tcp".into(), "$PORT".into()])
    );
    assert_eq!(
        last("USER  1000:1000  "),
        InstructionKind::User("1000:1000".into())
    );
    assert_eq!(
        last("WORKDIR C:\\\\app"),
        InstructionKind::Workdir("C:\\\\app".into())
    );
    assert_eq!(
        last("MAINTAINER a <b@c>"),
        InstructionKind::Maintainer("a <b@c>".into())
    );
    assert_eq!(
        last("STOPSIGNAL SIGKILL"),
        InstructionKind::Stopsignal("SIGKILL".into())
    );
}

#[test]
fn onbuild_triggers() {
    match last("ONBUILD ADD --chown=1 . /src") {
        InstructionKind::Onbuild(inner) => {
            assert_eq!(inner.original, "ADD --chown=1 . /src");
            assert_eq!(inner.span, Span { line: 2, column: 9 });
            match &inner.kind {
                InstructionKind::Add(c) => assert_eq!(c.chown.as_deref(), Some("1")),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    match last("ONBUILD COPY <<EOF /x\nhello\nEOF") {
        InstructionKind::Onbuild(inner) => {
            assert_eq!(inner.original, "COPY <<EOF /x\nhello\nEOF");
            match &inner.kind {
                InstructionKind::Copy(c) => {
                    assert_eq!(c.heredocs.len(), 1);
                    assert_eq!(c.heredocs[0].content, "hello\n");
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_scripts_follow_the_heredoc_convention() {
    use kiln_dockerfile::parser::{run_script, RunScript};
    let script = |body: &str| match last(body) {
        InstructionKind::Run(r) => run_script(&r),
        other => panic!("{other:?}"),
    };
    assert_eq!(script("RUN echo hi"), RunScript::Shell("echo hi".into()));
    assert_eq!(
        script("RUN [\"a\", \"b\"]"),
        RunScript::Exec(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        script("RUN <<EOF\necho 1\necho 2\nEOF"),
        RunScript::Shell("echo 1\necho 2\n".into())
    );
    assert_eq!(
        script("RUN <<-EOT\n\techo 1\n\tEOT"),
        RunScript::Shell("echo 1\n".into())
    );
    assert_eq!(
        script("RUN <<py\n#!/usr/bin/env python3\nprint(1)\npy"),
        RunScript::ShebangFile {
            path: "/dev/pipes/py".into(),
            content: "#!/usr/bin/env python3\nprint(1)\n".into()
        }
    );
    assert_eq!(
        script("RUN cat <<A > /a && cat <<'B' > /b\n1\nA\n$2\nB"),
        RunScript::Shell("cat <<A > /a && cat <<'B' > /b\n1\nA\n$2\nB".into())
    );
    assert_eq!(
        script("RUN --network=none python3 <<EOF\nprint(1)\nEOF"),
        RunScript::Shell("python3 <<EOF\nprint(1)\nEOF".into())
    );
}
