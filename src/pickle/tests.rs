//! Tests of the pickle machine: real CPython pickles of protocols 0–5 (generated once by
//! `testdata/gen_cases.py`, stored as byte literals), hand-written edge cases, malformed input
//! and limits.

use super::text::{self, Integer};
use super::{load, Arena, DictClass, NodeId, PickleLimits, Value};
use crate::error::{Error, ErrorKind};

mod cases {
    include!("testdata/cases.rs");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders a value the way `gen_cases.py` renders the Python object (cycles as `...`).
fn render(arena: &Arena, id: NodeId) -> String {
    let mut out = String::new();
    let mut path = Vec::new();
    render_into(arena, id, &mut path, &mut out);
    out
}

fn render_seq(arena: &Arena, items: &[NodeId], path: &mut Vec<NodeId>, out: &mut String) {
    for (i, &item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        render_into(arena, item, path, out);
    }
}

fn render_pairs(
    arena: &Arena,
    items: &[(NodeId, NodeId)],
    path: &mut Vec<NodeId>,
    out: &mut String,
) {
    out.push('{');
    for (i, &(k, v)) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        render_into(arena, k, path, out);
        out.push_str(": ");
        render_into(arena, v, path, out);
    }
    out.push('}');
}

fn render_into(arena: &Arena, id: NodeId, path: &mut Vec<NodeId>, out: &mut String) {
    if path.contains(&id) {
        out.push_str("...");
        return;
    }
    path.push(id);
    match arena.get(id) {
        Value::None => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::BigInt(b) => out.push_str(&format!("big:{}", hex(b))),
        Value::Float(f) => out.push_str(&format!("f:{}", hex(&f.to_be_bytes()))),
        Value::Complex(re, im) => out.push_str(&format!(
            "c(f:{}, f:{})",
            hex(&re.to_be_bytes()),
            hex(&im.to_be_bytes())
        )),
        Value::Str(s) => out.push_str(&format!("s:{}", hex(arena.str(*s).as_bytes()))),
        Value::Bytes(b) => out.push_str(&format!("b:{}", hex(b))),
        Value::ByteArray(b) => out.push_str(&format!("ba:{}", hex(b))),
        Value::List(items) => {
            out.push('[');
            render_seq(arena, items, path, out);
            out.push(']');
        }
        Value::Tuple(items) => {
            out.push('(');
            render_seq(arena, items, path, out);
            out.push(')');
        }
        Value::Dict { items, state, .. } => {
            render_pairs(arena, items, path, out);
            if let Some(state) = state {
                out.push('@');
                render_into(arena, *state, path, out);
            }
        }
        Value::Set(items) => {
            out.push_str("set{");
            render_seq(arena, items, path, out);
            out.push('}');
        }
        Value::FrozenSet(items) => {
            out.push_str("fs{");
            render_seq(arena, items, path, out);
            out.push('}');
        }
        Value::Global { module, name } => out.push_str(&format!("g:{module}.{name}")),
        Value::Object {
            callable,
            args,
            kwargs,
            new_object,
            state,
            items,
        } => {
            let (list_items, dict_items) = match items {
                Some(i) => (&i.list[..], &i.dict[..]),
                None => (&[][..], &[][..]),
            };
            out.push_str("obj(");
            render_into(arena, *callable, path, out);
            out.push_str(", ");
            render_into(arena, *args, path, out);
            if let Some(kwargs) = kwargs {
                out.push_str(", kw=");
                render_into(arena, *kwargs, path, out);
            }
            out.push_str(if *new_object { ", new" } else { ", call" });
            if let Some(state) = state {
                out.push_str(", state=");
                render_into(arena, *state, path, out);
            }
            if !list_items.is_empty() {
                out.push_str(", list=[");
                render_seq(arena, list_items, path, out);
                out.push(']');
            }
            if !dict_items.is_empty() {
                out.push_str(", dict=");
                render_pairs(arena, dict_items, path, out);
            }
            out.push(')');
        }
        Value::PersistentId(pid) => {
            out.push_str("pid(");
            render_into(arena, *pid, path, out);
            out.push(')');
        }
    }
    path.pop();
}

fn load_default(data: &[u8]) -> Result<(Arena, NodeId), Error> {
    let mut arena = Arena::new();
    let (root, used) = load(&mut arena, data, &PickleLimits::default())?;
    assert_eq!(used, data.len(), "STOP must be the last byte here");
    Ok((arena, root))
}

fn render_of(data: &[u8]) -> String {
    let (arena, root) = load_default(data).unwrap_or_else(|e| panic!("{e}"));
    render(&arena, root)
}

fn load_err(data: &[u8], limits: &PickleLimits) -> Error {
    let mut arena = Arena::new();
    match load(&mut arena, data, limits) {
        Ok((root, _)) => panic!("expected an error, got {}", render(&arena, root)),
        Err(e) => e,
    }
}

fn expect_err(data: &[u8], kind: ErrorKind, needles: &[&str]) {
    let e = load_err(data, &PickleLimits::default());
    assert_eq!(e.kind, kind, "{e}");
    for needle in needles {
        assert!(
            e.message.contains(needle),
            "{e:?} should mention {needle:?}"
        );
    }
}

fn s(text: &str) -> String {
    format!("s:{}", hex(text.as_bytes()))
}

// ----- real pickles ----------------------------------------------------------------------------

/// The outcome of loading `data`, as text: the rendered value and the bytes used, or the error.
fn outcome(data: &[u8], limits: &PickleLimits) -> String {
    let mut arena = Arena::new();
    match load(&mut arena, data, limits) {
        Ok((root, used)) => format!("ok {used}: {}", render(&arena, root)),
        Err(e) => format!("error {:?}: {}", e.kind, e.message),
    }
}

#[test]
fn fast_steps_change_no_result_and_no_error() {
    // A torch state dict's pickle (the opcodes fast_step takes), CPython's pickles of every
    // protocol, and for each: every truncation, a few bytes planted at every offset, and
    // limits small enough to trip, all loaded with fast_step on and off.
    let torch = {
        let bytes = include_bytes!("../../tests/data/zip/tiny_torch.pt");
        let archive = crate::container::zip::parse(bytes, &Default::default()).unwrap();
        let record = archive.get("data.pkl").unwrap();
        archive.data(bytes, record).unwrap().to_vec()
    };
    let mut inputs: Vec<Vec<u8>> = vec![torch.clone()];
    inputs.extend(cases::CASES.iter().map(|c| c.data.to_vec()));
    let mut variants: Vec<Vec<u8>> = Vec::new();
    for input in &inputs {
        variants.push(input.clone());
        variants.extend((0..input.len()).map(|n| input[..n].to_vec()));
    }
    for offset in 0..torch.len() {
        for byte in [
            0x00, 0xff, b'q', b'r', b'h', b'j', b'(', b't', b'K', b'X', b'\x8c', b'Q', b'R', b')',
        ] {
            let mut v = torch.clone();
            v[offset] = byte;
            variants.push(v);
        }
    }
    let tight = |f: fn(&mut PickleLimits)| {
        let mut limits = PickleLimits::default();
        f(&mut limits);
        limits
    };
    let limits = [
        PickleLimits::default(),
        tight(|l| l.max_stack = 3),
        tight(|l| l.max_nodes = 8),
        tight(|l| l.max_memo = 2),
        tight(|l| l.max_marks = 1),
        tight(|l| l.max_container_len = 1),
        tight(|l| l.max_str_len = 3),
    ];
    let mut compared = 0;
    for data in &variants {
        for limits in &limits {
            let fast = outcome(data, limits);
            super::machine::STEP_ONLY.with(|off| off.set(true));
            let slow = outcome(data, limits);
            super::machine::STEP_ONLY.with(|off| off.set(false));
            assert_eq!(fast, slow, "input {data:02x?}");
            compared += 1;
        }
    }
    assert!(compared > 10_000, "{compared}");
}

#[test]
fn real_pickles_of_every_protocol_load_as_expected() {
    assert!(cases::CASES.len() >= 60);
    for case in cases::CASES {
        let mut arena = Arena::new();
        let (root, used) = load(&mut arena, case.data, &PickleLimits::default())
            .unwrap_or_else(|e| panic!("{} protocol {}: {e}", case.name, case.proto));
        assert_eq!(
            used,
            case.data.len(),
            "{} protocol {}",
            case.name,
            case.proto
        );
        assert_eq!(
            render(&arena, root),
            case.expected,
            "{} protocol {}",
            case.name,
            case.proto
        );
    }
}

fn case(name: &str, proto: u8) -> &'static cases::Case {
    cases::CASES
        .iter()
        .find(|c| c.name == name && c.proto == proto)
        .unwrap()
}

#[test]
fn pickles_back_to_back_share_one_arena() {
    let parts = [
        case("ints", 2).data,
        case("nested", 0).data,
        case("state_dict", 4).data,
    ];
    let mut stream: Vec<u8> = parts.concat();
    stream.extend_from_slice(b"\x00\x01trailing raw bytes");
    let mut arena = Arena::new();
    let mut offset = 0;
    let mut roots = Vec::new();
    for part in parts {
        let (root, used) = load(&mut arena, &stream[offset..], &PickleLimits::default()).unwrap();
        assert_eq!(used, part.len());
        offset += used;
        roots.push(root);
    }
    assert_eq!(render(&arena, roots[0]), case("ints", 2).expected);
    assert_eq!(render(&arena, roots[1]), case("nested", 0).expected);
    assert_eq!(render(&arena, roots[2]), case("state_dict", 4).expected);
}

#[test]
fn shared_references_are_one_node_and_cycles_are_kept() {
    for proto in 0..=5 {
        let (arena, root) = load_default(case("shared", proto).data).unwrap();
        let items = arena.as_seq(root).unwrap();
        assert_eq!(items[0], items[1]);
        let Value::Dict { items: d, .. } = arena.get(items[2]) else {
            panic!()
        };
        assert_eq!(d[0].1, items[0]);

        let (arena, root) = load_default(case("recursive_list", proto).data).unwrap();
        assert_eq!(arena.as_seq(root).unwrap(), &[root]);

        let (arena, root) = load_default(case("recursive_dict", proto).data).unwrap();
        let Value::Dict { items, .. } = arena.get(root) else {
            panic!()
        };
        assert_eq!(items[0].1, root);
    }
}

#[test]
fn memoized_list_mutated_after_placement_is_seen_everywhere() {
    // a = []; outer = [a]; a.append(1) -- via the memo, as Python would share it.
    let data = b"\x80\x02]q\x00]q\x01h\x00a0h\x00K\x01a0h\x01.";
    let (arena, root) = load_default(data).unwrap();
    assert_eq!(render(&arena, root), "[[1]]");
}

#[test]
fn state_dict_shape() {
    let (arena, root) = load_default(case("state_dict", 2).data).unwrap();
    let Value::Dict { items, state, .. } = arena.get(root) else {
        panic!()
    };
    assert_eq!(items.len(), 2);
    assert!(state.is_some());
    let Value::Object {
        callable,
        args,
        new_object,
        ..
    } = arena.get(items[0].1)
    else {
        panic!()
    };
    assert_eq!(
        arena.global_name(*callable),
        Some(("torch._utils", "_rebuild_tensor_v2"))
    );
    assert!(!new_object);
    let args = arena.as_seq(*args).unwrap();
    assert!(matches!(arena.get(args[0]), Value::PersistentId(_)));
}

// ----- protocol 0 text forms and hand-written opcodes ------------------------------------------

#[test]
fn protocol_0_text_forms() {
    assert_eq!(render_of(b"I00\n."), "False");
    assert_eq!(render_of(b"I01\n."), "True");
    assert_eq!(render_of(b"I0\n."), "0");
    assert_eq!(render_of(b"I-42\n."), "-42");
    assert_eq!(render_of(b"I9223372036854775807\n."), "9223372036854775807");
    assert_eq!(
        render_of(b"I9223372036854775808\n."),
        "big:000000000000008000"
    );
    assert_eq!(render_of(b"L123L\n."), "123");
    assert_eq!(render_of(b"L123\n."), "123");
    assert_eq!(
        render_of(b"L-99999999999999999999999L\n."),
        "big:01008009b51e38fdd2ea"
    );
    assert_eq!(
        render_of(b"F1.5\n."),
        format!("f:{}", hex(&1.5f64.to_be_bytes()))
    );
    assert_eq!(render_of(b"Fnan\n.").len(), 18);
    assert_eq!(render_of(b"S'a\\x41\\n\\'q'\n."), s("aA\n'q"));
    assert_eq!(render_of(b"S\"a\\101\\z\"\n."), s("aA\\z"));
    assert_eq!(render_of(b"S'\\xff'\n."), "b:ff");
    assert_eq!(
        render_of(b"Vraw\\u00e9 \\\\u0041 \xe9\n."),
        s("raw\u{e9} \\\\u0041 \u{e9}")
    );
    assert_eq!(render_of(b"V\\ud83d\\ude00\n."), s("\u{1f600}"));
    assert_eq!(render_of(b"P42\n."), format!("pid({})", s("42")));
    assert_eq!(render_of(b"(lp7\nI1\nag7\n."), "[1]");
    assert_eq!(
        render_of(b"(I1\nifoo.mod\nBar\n."),
        "obj(g:foo.mod.Bar, (1), new)"
    );
    assert_eq!(
        render_of(b"(cfoo\nBar\nI1\nI2\no."),
        "obj(g:foo.Bar, (1, 2), new)"
    );
    // Python 2 str: text when UTF-8, bytes otherwise.
    assert_eq!(render_of(b"U\x02\xc3\xa9."), s("\u{e9}"));
    assert_eq!(render_of(b"T\x01\x00\x00\x00\xe9."), "b:e9");
    // Dotted names are kept verbatim.
    assert_eq!(render_of(b"cmod\nOuter.Inner\n."), "g:mod.Outer.Inner");
    // Protocol 2 INT opcodes and LONG1 edge values.
    assert_eq!(render_of(b"J\xff\xff\xff\xff."), "-1");
    assert_eq!(render_of(b"M\xff\xff."), "65535");
    assert_eq!(render_of(b"\x8a\x00."), "0");
    assert_eq!(
        render_of(b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff."),
        "-1"
    );
    assert_eq!(
        render_of(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\xff."),
        "-9223372036854775808"
    );
}

#[test]
fn text_helpers() {
    assert_eq!(text::parse_decimal(b"1_000", 10), Ok(Integer::Small(1000)));
    assert!(text::parse_decimal(b"1__0", 10).is_err());
    assert!(text::parse_decimal(b"", 10).is_err());
    assert!(text::parse_decimal(b"-", 10).is_err());
    assert_eq!(
        text::parse_decimal(b"-9223372036854775808", 10),
        Ok(Integer::Small(i64::MIN))
    );
    assert_eq!(
        text::parse_decimal(b"18446744073709551616", 30),
        Ok(Integer::Big(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]))
    );
    assert!(text::parse_decimal(b"18446744073709551616", 19).is_err());
    assert!(text::escape_decode(b"\\x4").is_err());
    assert!(text::raw_unicode_escape_decode(b"\\u12").is_err());
    assert!(text::raw_unicode_escape_decode(b"\\ud800").is_err());
    assert!(text::raw_unicode_escape_decode(b"\\U00110000").is_err());
}

/// The class of the dict a pickle builds, and its items.
fn dict_of(data: &[u8]) -> (DictClass, String) {
    let (arena, root) = load_default(data).unwrap_or_else(|e| panic!("{e}"));
    let Value::Dict { class, .. } = arena.get(root) else {
        panic!("not a dict: {}", render(&arena, root))
    };
    (*class, render(&arena, root))
}

#[test]
fn dicts_keep_their_class_in_every_form() {
    use DictClass::{Counter, Dict, OrderedDict};
    let a1 = format!("{{{}: 1}}", s("a"));
    let cases: &[(&[u8], DictClass, &str)] = &[
        // What CPython writes: `OrderedDict()` then SETITEM(S), protocols 2 and 0.
        (b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00aq\x02K\x01s.", OrderedDict, &a1),
        (b"ccollections\nOrderedDict\np0\n(tRp1\nVa\np2\nI1\ns.", OrderedDict, &a1),
        // Python 2: `OrderedDict([[key, value]])`, under its Python 2 module name too.
        (b"ccollections\nOrderedDict\n((lp0\n(lp1\nS'a'\naI1\naatRp2\n.", OrderedDict, &a1),
        (b"cUserDict\nOrderedDict\n((lp0\n(lp1\nS'a'\naI1\naatRp2\n.", OrderedDict, &a1),
        // `cls.__new__(cls)`, then items, then BUILD state.
        (b"\x80\x02ccollections\nOrderedDict\n)\x81X\x01\x00\x00\x00aK\x01s.", OrderedDict, &a1),
        (b"\x80\x02ccollections\nOrderedDict\n)\x81}K\x01K\x02sb.", OrderedDict, "{}@{1: 2}"),
        // What CPython writes for a Counter: `Counter({items})`, protocols 2 and 0.
        (b"\x80\x02ccollections\nCounter\nq\x00}q\x01X\x01\x00\x00\x00aq\x02K\x01s\x85q\x03Rq\x04.", Counter, &a1),
        (b"ccollections\nCounter\np0\n((dp1\nVa\np2\nI1\nstp3\nRp4\n.", Counter, &a1),
        (b"\x80\x02ccollections\nCounter\n)R.", Counter, "{}"),
        (b"\x80\x02ccollections\nCounter\n)\x81X\x01\x00\x00\x00aK\x01s.", Counter, &a1),
        // Plain dicts: EMPTY_DICT, DICT, and the `dict` class called or instantiated.
        (b"\x80\x02}X\x01\x00\x00\x00aK\x01s.", Dict, &a1),
        (b"(Va\nI1\nd.", Dict, &a1),
        (b"\x80\x02cbuiltins\ndict\n]K\x01K\x02\x86a\x85R.", Dict, "{1: 2}"),
        (b"\x80\x02c__builtin__\ndict\n)\x81X\x01\x00\x00\x00aK\x01s.", Dict, &a1),
    ];
    for &(data, class, items) in cases {
        assert_eq!(dict_of(data), (class, items.to_string()), "{data:?}");
    }
    // The class is one byte in `Value::Dict`'s padding: values stay 40 bytes.
    assert_eq!(std::mem::size_of::<Value>(), 40);
}

#[test]
fn interpreted_constructors() {
    // Python 2 OrderedDict: a list of [key, value] lists.
    assert_eq!(
        render_of(b"ccollections\nOrderedDict\n((lp0\n(lp1\nS'a'\naI1\naatRp2\n."),
        format!("{{{}: 1}}", s("a"))
    );
    // OrderedDict through NEWOBJ, then BUILD.
    assert_eq!(
        render_of(b"\x80\x02ccollections\nOrderedDict\n)\x81}K\x01K\x02sb."),
        "{}@{1: 2}"
    );
    // set.__new__(set, [1]) is empty; set([1, 1]) is {1}; tuple.__new__ keeps its items.
    assert_eq!(
        render_of(b"\x80\x02cbuiltins\nset\n]K\x01a\x85\x81."),
        "set{}"
    );
    assert_eq!(
        render_of(b"\x80\x02cbuiltins\nset\n(K\x01K\x01l\x85R."),
        "set{1}"
    );
    assert_eq!(
        render_of(b"\x80\x02c__builtin__\ntuple\n]K\x01a\x85\x81."),
        "(1)"
    );
    assert_eq!(render_of(b"\x80\x02c__builtin__\nlist\n)R."), "[]");
    assert_eq!(
        render_of(b"\x80\x02cbuiltins\ndict\n]K\x01K\x02\x86a\x85R."),
        "{1: 2}"
    );
    assert_eq!(render_of(b"\x80\x02cbuiltins\ncomplex\nK\x01\x85R."), render_of(b"\x80\x02cbuiltins\ncomplex\nG?\xf0\x00\x00\x00\x00\x00\x00G\x00\x00\x00\x00\x00\x00\x00\x00\x86R."));
    assert_eq!(
        render_of(b"\x80\x02cbuiltins\nbytearray\nX\x03\x00\x00\x00\xc3\xbfaX\x07\x00\x00\x00latin-1\x86R."),
        "ba:ff61"
    );
    // copyreg._reconstructor(cls, base, state) with a state.
    assert_eq!(
        render_of(b"ccopy_reg\n_reconstructor\n(cm\nC\nc__builtin__\ndict\n(dtR."),
        "obj(g:m.C, ({}), new)"
    );
    // Shapes that are not interpreted stay opaque objects.
    assert_eq!(
        render_of(b"\x80\x02cbuiltins\nbytearray\nK\x05\x85R."),
        "obj(g:builtins.bytearray, (5), call)"
    );
    assert_eq!(
        render_of(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00ascii\x86R."),
        format!("obj(g:_codecs.encode, ({}, {}), call)", s("a"), s("ascii"))
    );
    // NEWOBJ_EX keeps its keyword arguments.
    assert_eq!(
        render_of(b"\x80\x04\x8c\x01m\x8c\x01C\x93)}K\x01K\x02s\x92."),
        "obj(g:m.C, (), kw={1: 2}, new)"
    );
    // APPENDS / SETITEMS on an object go to its item lists; BUILD replaces the state.
    assert_eq!(
        render_of(b"\x80\x02cm\nC\n)\x81(K\x01K\x02eK\x03K\x04sNbK\x05b."),
        "obj(g:m.C, (), new, state=5, list=[1, 2], dict={3: 4})"
    );
}

#[test]
fn codecs_encode_of_non_latin1_is_format() {
    expect_err(
        b"c_codecs\nencode\n(V\\u0100\nVlatin1\ntR.",
        ErrorKind::Format,
        &["REDUCE", "U+0100", "latin-1"],
    );
}

#[test]
fn dict_keys_follow_python_semantics() {
    // {1: 2, 1: 3, True: 4} -> {1: 4}; 'a' twice from different nodes merges; so do equal
    // tuples (`(1,)` twice: one key, the later value).
    let data = b"\x80\x02}(K\x01K\x02K\x01K\x03\x88K\x04X\x01\x00\x00\x00aK\x05\
                 X\x01\x00\x00\x00aK\x06C\x01aK\x07NK\x08NK\x09K\x01\x85K\x0aK\x01\x85K\x0bu.";
    assert_eq!(
        render_of(data),
        format!("{{1: 4, {}: 6, b:61: 7, None: 9, (1): 11}}", s("a"))
    );
    // Sets deduplicate the same kinds.
    assert_eq!(
        render_of(b"\x80\x04\x8f(K\x01\x88K\x02\x8c\x01a\x8c\x01a\x90."),
        format!("set{{1, 2, {}}}", s("a"))
    );
    // A long memoized key reused many times.
    let mut data = b"\x80\x02}(X\x00\x01\x00\x00".to_vec();
    data.extend(std::iter::repeat(b'k').take(256));
    data.extend_from_slice(b"q\x00K\x00");
    for i in 1..=200u8 {
        data.extend_from_slice(&[b'h', 0, b'K', i]);
    }
    data.extend_from_slice(b"u.");
    let (arena, root) = load_default(&data).unwrap();
    let Value::Dict { items, .. } = arena.get(root) else {
        panic!()
    };
    assert_eq!(items.len(), 1);
    assert_eq!(arena.as_int(items[0].1), Some(200));
}

#[test]
fn dict_of_100000_entries_loads_in_linear_time() {
    const N: u32 = 100_000;
    let mut data = b"\x80\x02}q\x00".to_vec();
    for round in 0..2u32 {
        for batch in (0..N).collect::<Vec<_>>().chunks(1000) {
            data.push(b'(');
            for &i in batch {
                let key = format!("layer{i}.weight");
                data.push(0x8c);
                data.push(key.len() as u8);
                data.extend_from_slice(key.as_bytes());
                data.push(b'J');
                data.extend_from_slice(&(i * 2 + round).to_le_bytes());
            }
            data.push(b'u');
        }
    }
    data.push(b'.');
    let (arena, root) = load_default(&data).unwrap();
    let Value::Dict { items, .. } = arena.get(root) else {
        panic!()
    };
    assert_eq!(items.len(), N as usize);
    assert_eq!(arena.as_str(items[12345].0), Some("layer12345.weight"));
    assert_eq!(arena.as_int(items[12345].1), Some(12345 * 2 + 1));
}

// ----- safety ----------------------------------------------------------------------------------

#[test]
fn os_system_is_an_inert_object() {
    let marker = std::env::temp_dir().join("mmckpt_pickle_test_must_not_exist");
    let _ = std::fs::remove_file(&marker);
    let command = format!("touch {}", marker.display());
    let mut data = b"cos\nsystem\n(S'".to_vec();
    data.extend_from_slice(command.as_bytes());
    data.extend_from_slice(b"'\ntR.");
    let (arena, root) = load_default(&data).unwrap();
    let Value::Object {
        callable,
        args,
        new_object,
        state,
        ..
    } = arena.get(root)
    else {
        panic!("{}", render(&arena, root))
    };
    assert_eq!(arena.global_name(*callable), Some(("os", "system")));
    assert_eq!(
        arena.as_str(arena.as_seq(*args).unwrap()[0]),
        Some(command.as_str())
    );
    assert!(!new_object && state.is_none());
    // The protocol 4 spelling, through STACK_GLOBAL.
    assert_eq!(
        render_of(b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x02id\x85R."),
        format!("obj(g:posix.system, ({}), call)", s("id"))
    );
    assert!(!marker.exists());
}

#[test]
fn truncation_at_every_offset_is_a_format_error() {
    for case in cases::CASES {
        for end in 0..case.data.len() {
            let mut arena = Arena::new();
            match load(&mut arena, &case.data[..end], &PickleLimits::default()) {
                Err(e) => assert_eq!(
                    e.kind,
                    ErrorKind::Format,
                    "{} protocol {} cut at {end}: {e}",
                    case.name,
                    case.proto
                ),
                Ok(_) => panic!("{} protocol {} cut at {end} loaded", case.name, case.proto),
            }
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let limits = PickleLimits::default();
    for case in cases::CASES.iter().filter(|c| c.proto == 2 || c.proto == 4) {
        for at in 0..case.data.len() {
            for byte in [0x00, 0xff, 0x7f, 0x80, b'(', b'a', b'e', b'.', b'h', b'0'] {
                let mut data = case.data.to_vec();
                data[at] = byte;
                let mut arena = Arena::new();
                let _ = load(&mut arena, &data, &limits);
            }
        }
    }
}

#[test]
fn malformed_input_errors() {
    expect_err(b"\xff", ErrorKind::Format, &["0xff", "offset 0"]);
    expect_err(b"\x80\x02\xff.", ErrorKind::Format, &["0xff", "offset 2"]);
    expect_err(
        b"\x85.",
        ErrorKind::Format,
        &["TUPLE1", "offset 0", "underflow"],
    );
    expect_err(b".", ErrorKind::Format, &["STOP", "underflow"]);
    expect_err(
        b"N(\x85.",
        ErrorKind::Format,
        &["TUPLE1", "offset 2", "MARK"],
    );
    assert_eq!(render_of(b"N(0."), "None"); // POP takes a MARK on top of the stack
    expect_err(b"1.", ErrorKind::Format, &["POP_MARK", "MARK"]);
    expect_err(b"Nt.", ErrorKind::Format, &["TUPLE", "MARK"]);
    expect_err(b"", ErrorKind::Format, &["STOP"]);
    expect_err(b"N", ErrorKind::Format, &["STOP", "offset 1"]);
    expect_err(b"h\x05.", ErrorKind::Format, &["BINGET", "memo", "5"]);
    expect_err(b"g5\n.", ErrorKind::Format, &["GET", "memo"]);
    expect_err(
        b"j\x00\x00\x00\x01.",
        ErrorKind::Format,
        &["LONG_BINGET", "memo"],
    );
    expect_err(b"p-1\nN.", ErrorKind::Format, &["PUT"]);
    expect_err(
        b"K\x01K\x02a.",
        ErrorKind::Format,
        &["APPEND", "offset 4", "int"],
    );
    expect_err(b")K\x01K\x02s.", ErrorKind::Format, &["SETITEM", "tuple"]);
    expect_err(b"]Nb.", ErrorKind::Format, &["BUILD", "list"]);
    expect_err(b"}(K\x01\x90.", ErrorKind::Format, &["ADDITEMS", "dict"]);
    expect_err(
        b"K\x01K\x02\x93.",
        ErrorKind::Format,
        &["STACK_GLOBAL", "strings"],
    );
    expect_err(b"cm\nf\nK\x01R.", ErrorKind::Format, &["REDUCE", "tuple"]);
    expect_err(
        b"cm\nf\n)K\x01\x92.",
        ErrorKind::Format,
        &["NEWOBJ_EX", "dict"],
    );
    expect_err(b"(K\x01d.", ErrorKind::Format, &["DICT", "odd"]);
    expect_err(b"(o.", ErrorKind::Format, &["OBJ"]);
    expect_err(b"S'abc\n.", ErrorKind::Format, &["STRING", "quoted"]);
    expect_err(b"S'\\x4'\n.", ErrorKind::Format, &["STRING", "\\x"]);
    expect_err(b"Iabc\n.", ErrorKind::Format, &["INT"]);
    expect_err(b"I12", ErrorKind::Format, &["INT", "truncated"]);
    expect_err(b"Fx\n.", ErrorKind::Format, &["FLOAT"]);
    expect_err(
        b"X\x02\x00\x00\x00\xc3(.",
        ErrorKind::Format,
        &["BINUNICODE", "UTF-8"],
    );
    expect_err(b"P\xff\n.", ErrorKind::Format, &["PERSID", "ASCII"]);
    expect_err(
        b"T\xff\xff\xff\xff.",
        ErrorKind::Format,
        &["BINSTRING", "negative"],
    );
    expect_err(
        b"\x8b\xff\xff\xff\xff.",
        ErrorKind::Format,
        &["LONG4", "negative"],
    );
    expect_err(
        b"\x95\x10\x00\x00\x00\x00\x00\x00\x00N.",
        ErrorKind::Format,
        &["FRAME", "truncated"],
    );
    expect_err(b"\x80\x06N.", ErrorKind::Unsupported, &["PROTO", "6"]);
    expect_err(b"\x82\x01.", ErrorKind::Unsupported, &["EXT1", "offset 0"]);
    expect_err(b"\x83\x01\x00.", ErrorKind::Unsupported, &["EXT2"]);
    expect_err(b"\x84\x01\x00\x00\x00.", ErrorKind::Unsupported, &["EXT4"]);
    expect_err(b"\x97.", ErrorKind::Unsupported, &["NEXT_BUFFER"]);
    expect_err(
        b"N\x98.",
        ErrorKind::Unsupported,
        &["READONLY_BUFFER", "offset 1"],
    );
}

#[test]
fn huge_declared_lengths_are_truncation_not_allocation() {
    let mut data = b"\x80\x04\x8d".to_vec();
    data.extend_from_slice(&(1u64 << 62).to_le_bytes());
    data.extend_from_slice(b"abc.");
    expect_err(
        &data,
        ErrorKind::Format,
        &["BINUNICODE8", "truncated", "offset 2"],
    );
    for opcode in [0x8e, 0x96, 0x8d, 0x95] {
        let mut data = vec![opcode];
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        data.push(b'.');
        expect_err(&data, ErrorKind::Format, &["truncated"]);
    }
    expect_err(
        b"X\xff\xff\xff\xffab.",
        ErrorKind::Format,
        &["BINUNICODE", "truncated"],
    );
    expect_err(
        b"B\xff\xff\xff\xffab.",
        ErrorKind::Format,
        &["BINBYTES", "truncated"],
    );
    expect_err(
        b"\x8b\xff\xff\xff\x7f.",
        ErrorKind::Format,
        &["LONG4", "truncated"],
    );
    expect_err(
        b"T\xff\xff\xff\x7f.",
        ErrorKind::Format,
        &["BINSTRING", "truncated"],
    );
}

/// `]` then `(]` N times then `e` N times: N nested lists, N MARKs deep.
fn nested_lists(n: usize) -> Vec<u8> {
    let mut data = vec![b']'];
    for _ in 0..n {
        data.extend_from_slice(b"(]");
    }
    data.extend(std::iter::repeat(b'e').take(n));
    data.push(b'.');
    data
}

#[test]
fn deep_nesting_is_iterative_and_bounded() {
    const N: usize = 100_000;
    let data = nested_lists(N);
    let e = load_err(&data, &PickleLimits::default());
    assert_eq!(e.kind, ErrorKind::Limit);
    assert!(e.message.contains("max_marks = 10000"), "{e}");
    assert!(e.message.contains("MARK"), "{e}");

    let limits = PickleLimits {
        max_marks: N,
        ..PickleLimits::default()
    };
    let mut arena = Arena::new();
    let (root, _) = load(&mut arena, &data, &limits).unwrap();
    let mut depth = 0;
    let mut node = root;
    while let Some(&[inner]) = arena.as_seq(node) {
        depth += 1;
        node = inner;
    }
    assert_eq!(depth, N);
    drop(arena); // dropping a deep tree must not recurse either

    // The same depth without MARKs: N EMPTY_LISTs then N-1 APPENDs.
    let mut data = vec![b']'; N];
    data.extend(std::iter::repeat(b'a').take(N - 1));
    data.push(b'.');
    let (arena, root) = load_default(&data).unwrap();
    assert_eq!(arena.len(), N);
    assert_eq!(arena.as_seq(root).unwrap().len(), 1);
}

fn limit_err(data: &[u8], limits: PickleLimits, needles: &[&str]) {
    let e = load_err(data, &limits);
    assert_eq!(e.kind, ErrorKind::Limit, "{e}");
    for needle in needles {
        assert!(
            e.message.contains(needle),
            "{e:?} should mention {needle:?}"
        );
    }
}

#[test]
fn every_limit_is_enforced() {
    let d = PickleLimits::default;
    // max_nodes: four lists, or items copied by an interpreted constructor.
    let nodes = PickleLimits {
        max_nodes: 3,
        ..d()
    };
    assert!(load(&mut Arena::new(), b"]]].", &nodes).is_ok());
    limit_err(
        b"]]]].",
        nodes.clone(),
        &["max_nodes = 3", "EMPTY_LIST", "offset 3"],
    );
    let nodes = PickleLimits {
        max_nodes: 8,
        ..d()
    };
    limit_err(
        b"\x80\x02cbuiltins\nlist\n](K\x01K\x02K\x03e\x85R.",
        nodes,
        &["max_nodes = 8", "REDUCE"],
    );
    // Nodes are counted per call, not per arena.
    let mut arena = Arena::new();
    let limits = PickleLimits {
        max_nodes: 2,
        ..d()
    };
    for _ in 0..3 {
        load(&mut arena, b"]].", &limits).unwrap();
    }
    // max_stack
    let stack = PickleLimits {
        max_stack: 3,
        ..d()
    };
    assert!(load(&mut Arena::new(), b"NNN.", &stack).is_ok());
    limit_err(
        b"NNNN.",
        stack.clone(),
        &["max_stack = 3", "NONE", "offset 3"],
    );
    limit_err(b"NNN2.", stack, &["max_stack", "DUP"]);
    // max_marks
    let marks = PickleLimits {
        max_marks: 2,
        ..d()
    };
    limit_err(b"(((.", marks, &["max_marks = 2", "MARK", "offset 2"]);
    // max_memo: re-putting an existing key does not count.
    let memo = PickleLimits { max_memo: 2, ..d() };
    assert!(load(&mut Arena::new(), b"Nq\x00q\x01q\x00q\x01.", &memo).is_ok());
    limit_err(
        b"Nq\x00q\x01q\x02.",
        memo.clone(),
        &["max_memo = 2", "BINPUT"],
    );
    limit_err(b"\x80\x04N\x94\x94\x94.", memo, &["max_memo", "MEMOIZE"]);
    // max_str_len: every string and bytes form, and long integers.
    let strs = PickleLimits {
        max_str_len: 4,
        ..d()
    };
    assert!(load(&mut Arena::new(), b"X\x04\x00\x00\x00abcd.", &strs).is_ok());
    for data in [
        &b"X\x05\x00\x00\x00abcde."[..],
        b"\x8c\x05abcde.",
        b"C\x05abcde.",
        b"U\x05abcde.",
        b"Vabcde\n.",
        b"S'abcde'\n.",
        b"Pabcde\n.",
        b"\x8a\x05\x01\x02\x03\x04\x05.",
        b"I123456789012345678901234\n.",
    ] {
        limit_err(data, strs.clone(), &["max_str_len = 4"]);
    }
    // Text integers are bounded by 4300 digits whatever max_str_len says.
    let mut big = b"L".to_vec();
    big.extend(std::iter::repeat(b'7').take(5000));
    big.extend_from_slice(b"L\n.");
    limit_err(&big, d(), &["4300", "LONG"]);
    // max_container_len: every way of growing a container.
    let items = PickleLimits {
        max_container_len: 2,
        ..d()
    };
    assert!(load(&mut Arena::new(), b"(NNl.", &items).is_ok());
    for (data, op) in [
        (&b"(NNNl."[..], "LIST"),
        (b"(NNNt.", "TUPLE"),
        (b"(K\x01NK\x02NK\x03Nd.", "DICT"),
        (b"]NaNaNa.", "APPEND"),
        (b"](NNNe.", "APPENDS"),
        (b"}K\x01NsK\x02NsK\x03Ns.", "SETITEM"),
        (b"}(K\x01NK\x02NK\x03Nu.", "SETITEMS"),
        (b"\x8f(K\x01K\x02K\x03\x90.", "ADDITEMS"),
        (b"(K\x01K\x02K\x03\x91.", "FROZENSET"),
        (b"cm\nC\n)\x81(NNNe.", "APPENDS"),
    ] {
        limit_err(data, items.clone(), &["max_container_len = 2", op]);
    }
}

#[test]
fn interpreted_copies_cannot_amplify_memory() {
    // bytearray(b) of one memoized 600-byte value, three times: the copies exceed the budget
    // of input size + max_str_len.
    let mut data = b"\x80\x03B\x58\x02\x00\x00".to_vec();
    data.extend(std::iter::repeat(b'z').take(600));
    data.extend_from_slice(b"q\x00");
    for _ in 0..3 {
        data.extend_from_slice(b"cbuiltins\nbytearray\nh\x00\x85R0");
    }
    data.extend_from_slice(b"N.");
    let limits = PickleLimits {
        max_str_len: 1000,
        ..PickleLimits::default()
    };
    let e = load_err(&data, &limits);
    assert_eq!(e.kind, ErrorKind::Limit, "{e}");
    assert!(e.message.contains("max_str_len"), "{e}");
    // Two copies fit.
    let cut = data.len() - b"cbuiltins\nbytearray\nh\x00\x85R0N.".len();
    let mut two = data[..cut].to_vec();
    two.extend_from_slice(b"N.");
    assert!(load(&mut Arena::new(), &two, &limits).is_ok());
}

#[test]
fn legacy_torch_stream_header() {
    // torch's legacy format: magic number, protocol version, sys info, ... back to back.
    let stream = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}q\x00.";
    let mut arena = Arena::new();
    let (magic, used) = load(&mut arena, stream, &PickleLimits::default()).unwrap();
    assert_eq!(render(&arena, magic), "big:6cfc9c46f9206aa85019");
    let (version, used2) = load(&mut arena, &stream[used..], &PickleLimits::default()).unwrap();
    assert_eq!(arena.as_int(version), Some(1001));
    let (info, _) = load(
        &mut arena,
        &stream[used + used2..],
        &PickleLimits::default(),
    )
    .unwrap();
    assert_eq!(render(&arena, info), "{}");
}

/// BINFLOAT: 'G' and the float big-endian.
fn binfloat(f: f64) -> Vec<u8> {
    let mut out = vec![b'G'];
    out.extend_from_slice(&f.to_be_bytes());
    out
}

/// A dict pickle (protocol 2) of the given key opcodes, each with the value `K i`.
fn dict_of_keys(keys: &[Vec<u8>]) -> Vec<u8> {
    let mut data = b"\x80\x02}(".to_vec();
    for (i, key) in keys.iter().enumerate() {
        data.extend_from_slice(key);
        data.extend_from_slice(&[b'K', i as u8]);
    }
    data.extend_from_slice(b"u.");
    data
}

#[test]
fn numeric_keys_fold_across_bool_int_bigint_float_and_complex() {
    // {1: 0, 1.0: 1, True: 2, complex(1, 0): 3} -> {1: 3}, the first key kept.
    let complex_one = b"c__builtin__\ncomplex\nG?\xf0\x00\x00\x00\x00\x00\x00G\x00\x00\x00\x00\x00\x00\x00\x00\x86R".to_vec();
    let data = dict_of_keys(&[
        b"K\x01".to_vec(),
        binfloat(1.0),
        b"\x88".to_vec(),
        complex_one,
    ]);
    assert_eq!(render_of(&data), "{1: 3}");
    // {-0.0: 0, 0: 1, False: 2} -> {-0.0: 2}.
    let data = dict_of_keys(&[binfloat(-0.0), b"K\x00".to_vec(), b"\x89".to_vec()]);
    assert_eq!(render_of(&data), "{f:8000000000000000: 2}");
    // 2**64 (LONG1, padded with a zero byte) and float(2**64); 2**53 + 1 and its float differ.
    let data = dict_of_keys(&[
        b"\x8a\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00".to_vec(),
        binfloat(2f64.powi(64)),
        b"\x8a\x08\x01\x00\x00\x00\x00\x00\x20\x00".to_vec(),
        binfloat(2f64.powi(53)),
    ]);
    assert_eq!(
        render_of(&data),
        "{big:000000000000000001: 1, 9007199254740993: 2, f:4340000000000000: 3}"
    );
}

#[test]
fn nan_keys_fold_only_when_the_same_object() {
    let nan = binfloat(f64::NAN);
    // Two NaN objects: two keys.
    let data = dict_of_keys(&[nan.clone(), nan.clone()]);
    assert_eq!(
        render_of(&data),
        "{f:7ff8000000000000: 0, f:7ff8000000000000: 1}"
    );
    // One memoized NaN (BINPUT 0, then BINGET 0): one key, the later value.
    let mut memo = nan.clone();
    memo.extend_from_slice(b"q\x00");
    let data = dict_of_keys(&[memo, b"h\x00".to_vec()]);
    assert_eq!(render_of(&data), "{f:7ff8000000000000: 1}");
    // Inside tuples too: (nan,) built twice from the same memoized NaN is one key.
    let mut first = nan;
    first.extend_from_slice(b"q\x00\x85");
    let data = dict_of_keys(&[first, b"h\x00\x85".to_vec()]);
    assert_eq!(render_of(&data), "{(f:7ff8000000000000): 1}");
}
