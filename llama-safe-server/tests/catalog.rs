//! Discovery over folders laid out exactly as the tools lay them out: a
//! models folder with a split model, a projector and a draft; the Hugging
//! Face hub cache (snapshots linking into blobs, refs/main); Ollama's store
//! (manifests naming blobs); LM Studio's folder. And the presets file.

use llama_safe::demo::DemoModel;
use llama_safe::gguf::{GgufWriter, MetaValue};
use llama_safe_server::catalog::{Catalog, Kind, Source, Sources};
use llama_safe_server::presets::Presets;
use std::path::{Path, PathBuf};

fn demo_bytes() -> Vec<u8> {
    std::fs::read(DemoModel::Moe.cached().unwrap()).unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A GGUF with only metadata: a projector (architecture `clip`).
fn projector(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::Str("clip".into()));
    w.write_to(path).unwrap();
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, at).unwrap();
}

fn tree() -> PathBuf {
    tree_for("all")
}

/// A fresh folder for the test named `test` (tests run at once: each its own).
fn tree_for(test: &str) -> PathBuf {
    let root =
        std::env::temp_dir().join(format!("llama-safe-catalog-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    root
}

#[test]
#[cfg(unix)]
fn every_source_as_its_tool_lays_it_out() {
    let root = tree();
    let demo = demo_bytes();

    // A models folder: a model, a split model, a broken split, a projector,
    // a draft, a file that is not a GGUF.
    let dir = root.join("models");
    write(&dir.join("tiny-moe.gguf"), &demo);
    write(&dir.join("big/big-q4_k_m-00001-of-00002.gguf"), &demo);
    write(&dir.join("big/big-q4_k_m-00002-of-00002.gguf"), &demo);
    write(&dir.join("half-00001-of-00002.gguf"), &demo);
    projector(&dir.join("tiny-moe-mmproj-f16.gguf"));
    write(&dir.join("tiny-moe-draft.gguf"), &demo);
    write(&dir.join("notes.gguf"), b"not a gguf at all");

    // The Hugging Face hub cache: refs/main names the snapshot, whose files
    // link into blobs/.
    let hf = root.join("hf/hub");
    let repo = hf.join("models--acme--Tiny-MoE-GGUF");
    let blob = repo.join("blobs/0123abcd");
    write(&blob, &demo);
    write(&repo.join("refs/main"), b"rev2");
    link(
        Path::new("../../blobs/0123abcd"),
        &repo.join("snapshots/rev2/tiny-moe-q8_0.gguf"),
    );
    link(
        Path::new("../../blobs/0123abcd"),
        &repo.join("snapshots/rev1/old.gguf"),
    );
    link(
        Path::new("../../blobs/missing"),
        &repo.join("snapshots/rev2/partial.gguf"),
    );
    write(&hf.join("datasets--acme--data/refs/main"), b"x");

    // Ollama's store.
    let ol = root.join("ollama/models");
    let hex = "a".repeat(64);
    write(&ol.join(format!("blobs/sha256-{hex}")), &demo);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{c}","size":1}},
            "layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{hex}","size":{n}}},
                      {{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:{c}","size":1}}]}}"#,
        c = "b".repeat(64),
        n = demo.len()
    );
    write(
        &ol.join("manifests/registry.ollama.ai/library/tiny/latest"),
        manifest.as_bytes(),
    );
    write(
        &ol.join("manifests/registry.ollama.ai/someone/tiny/q8"),
        manifest.as_bytes(),
    );
    write(
        &ol.join("manifests/example.com/team/tiny/v1"),
        manifest.as_bytes(),
    );
    write(
        &ol.join("manifests/registry.ollama.ai/library/gone/latest"),
        manifest.replace(&hex, &"c".repeat(64)).as_bytes(),
    );

    // LM Studio's folder.
    let lms = root.join("lmstudio/models");
    write(&lms.join("acme/Tiny-GGUF/tiny-q8_0.gguf"), &demo);

    let sources = Sources::default()
        .with_dir(&dir)
        .with_hf_cache(&hf)
        .with_ollama(&ol)
        .with_lm_studio(&lms);
    let catalog = Catalog::scan(&sources);
    let names: Vec<&str> = catalog.chat_models().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "acme/Tiny-GGUF/tiny-q8_0",
            "acme/Tiny-MoE-GGUF:tiny-moe-q8_0",
            "big/big-q4_k_m",
            "example.com/team/tiny:v1",
            "someone/tiny:q8",
            "tiny-moe",
            "tiny:latest",
        ],
        "skipped: {:?}",
        catalog.skipped
    );
    let big = catalog.get("big/big-q4_k_m").unwrap();
    assert_eq!(big.files.len(), 2);
    assert!(big.path.ends_with("big-q4_k_m-00001-of-00002.gguf"));
    assert_eq!(big.size, 2 * demo.len() as u64);
    assert_eq!(big.family, "llama");
    let hf_model = catalog.get("acme/Tiny-MoE-GGUF:tiny-moe-q8_0").unwrap();
    assert_eq!(hf_model.source, Source::HuggingFace);
    assert_eq!(hf_model.size, demo.len() as u64);
    assert_eq!(catalog.get("tiny:latest").unwrap().source, Source::Ollama);
    assert_eq!(
        catalog.get("tiny-moe-mmproj-f16").unwrap().kind,
        Kind::Projector
    );
    assert_eq!(catalog.get("tiny-moe-draft").unwrap().kind, Kind::Draft);
    // What was left out, and why.
    let skipped = |end: &str| {
        catalog
            .skipped
            .iter()
            .find(|(p, _)| p.ends_with(end))
            .map(|(_, why)| why.clone())
    };
    assert!(skipped("half-00001-of-00002.gguf")
        .unwrap()
        .contains("1 of 2 shards"));
    assert!(skipped("notes.gguf").is_some());
    assert!(skipped("partial.gguf")
        .unwrap_or_else(|| panic!("{:?}", catalog.skipped))
        .contains("missing file"));
    assert!(skipped("gone/latest").unwrap().contains("blob is missing"));
    assert!(
        catalog.get("acme/Tiny-MoE-GGUF:old").is_none(),
        "only the snapshot refs/main names"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn presets_with_their_errors_naming_the_key_and_the_file() {
    let path = Path::new("/etc/llama/models.toml");
    let presets = Presets::parse(
        r#"
        [defaults]
        ctx_size = 4096
        cache_type_k = "q8_0"

        [models."tiny-moe"]
        n_cpu_moe = 2
        parallel = 2
        chat_template_file = "templates/chatml.jinja"
        aliases = ["tiny", "default"]

        [models."acme/Tiny-MoE-GGUF:tiny-moe-q8_0"]
        cpu_moe = true
        ctx_size = 2048
        "#,
        path,
    )
    .unwrap();
    assert_eq!(presets.resolve("tiny"), "tiny-moe");
    assert_eq!(presets.resolve("other"), "other");
    let p = presets.for_model("tiny-moe");
    assert_eq!(
        (p.n_cpu_moe, p.parallel, p.ctx_size),
        (Some(2), Some(2), Some(4096))
    );
    assert_eq!(p.cache_type_k.as_deref(), Some("q8_0"));
    assert_eq!(
        p.chat_template_file.as_deref(),
        Some(Path::new("/etc/llama/templates/chatml.jinja"))
    );
    let q = presets.for_model("acme/Tiny-MoE-GGUF:tiny-moe-q8_0");
    assert_eq!((q.cpu_moe, q.ctx_size), (Some(true), Some(2048)));
    let engine = q.engine_config(llama_safe::engine::EngineConfig::default());
    assert_eq!(engine.n_ctx(), 2048);
    assert_eq!(presets.for_model("unknown").ctx_size, Some(4096));

    for (text, want) in [
        ("[models.a]\ncpu_mo = true\n", "unknown field `cpu_mo`"),
        ("[defaults]\nctx_size = \"big\"\n", "ctx_size"),
        ("[model.a]\n", "unknown field `model`"),
        (
            "[models.a]\ncpu_moe = true\nn_cpu_moe = 3\n",
            "`cpu_moe` and `n_cpu_moe` together",
        ),
        ("[models.a]\ncache_type_v = \"q9\"\n", "cache_type_v"),
        ("[models.a]\nparallel = 0\n", "`parallel` must be above 0"),
        (
            "[models.a]\naliases = [\"x\"]\n[models.b]\naliases = [\"x\"]\n",
            "the alias \"x\"",
        ),
        (
            "[models.a]\naliases = [\"b\"]\n[models.b]\n",
            "both a model's name and another's alias",
        ),
        (
            "[defaults]\naliases = [\"x\"]\n",
            "[defaults] cannot have aliases",
        ),
        ("not toml", ""),
    ] {
        let e = Presets::parse(text, path).unwrap_err();
        assert_eq!(e.path, path);
        assert!(e.to_string().starts_with("/etc/llama/models.toml: "), "{e}");
        assert!(e.message.contains(want), "{text:?}: {e}");
    }
    let missing = Presets::load(Path::new("/nonexistent/models.toml")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/models.toml"),
        "{missing}"
    );
}

#[cfg(unix)]
fn fifo(at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo reads it and returns a status.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "{at:?}");
}

/// `f` on another thread, which must end within `limit` (a scan that
/// blocks on a FIFO or walks the whole file system fails here).
fn within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not end within {limit:?}"))
}

/// Regression (audit round 3): the scans followed links out of their store
/// (a directory link in a models folder, snapshot links leaving an HF
/// cache, a link to `/` in Ollama's store, where the scan walked the whole
/// file system and blocked reading /proc/kmsg), opened FIFOs, and listed
/// names with a newline that forged log lines. Every store is laid out with
/// each of them; the scan ends at once and lists only what is inside.
#[test]
#[cfg(unix)]
fn scans_stay_inside_their_store_and_read_only_regular_files() {
    let root = tree_for("confined");
    let demo = demo_bytes();
    let outside = root.join("elsewhere");
    write(&outside.join("secret.gguf"), &demo);
    write(&outside.join("pub/repo/secret.gguf"), &demo);

    // A models folder: a good model, links out (a folder, `/`, a file), a
    // FIFO named like a model, a name with a newline.
    let dir = root.join("models");
    write(&dir.join("good.gguf"), &demo);
    link(&outside, &dir.join("linked-out"));
    link(Path::new("/"), &dir.join("root"));
    link(&outside.join("secret.gguf"), &dir.join("file-out.gguf"));
    fifo(&dir.join("fifo.gguf"));
    write(&dir.join("forged\nserver: admin logged in.gguf"), &demo);
    // A file link inside the store is followed, and named by where it is;
    // a folder link inside the store is not walked twice: its models keep
    // the names of their own folder, whatever the order of the scan.
    link(&dir.join("good.gguf"), &dir.join("inside/also-good.gguf"));
    link(&dir.join("inside"), &dir.join("a-link-to-inside"));

    // The HF cache: a snapshot file linking out of the cache, refs/main a FIFO.
    let hf = root.join("hf");
    let repo = hf.join("models--acme--Escape-GGUF");
    link(
        &outside.join("secret.gguf"),
        &repo.join("snapshots/r1/secret.gguf"),
    );
    fifo(&repo.join("refs/main"));
    let good_repo = hf.join("models--acme--Good-GGUF");
    write(&good_repo.join("blobs/b1"), &demo);
    link(
        Path::new("../../blobs/b1"),
        &good_repo.join("snapshots/r1/good.gguf"),
    );

    // Ollama's store: a registry that is a link to `/`, a manifest that is
    // a FIFO, a blob linking out of the store.
    let ol = root.join("ollama");
    link(Path::new("/"), &ol.join("manifests/evil.example"));
    fifo(&ol.join("manifests/registry.ollama.ai/library/fifo/latest"));
    let hex = "e".repeat(64);
    link(
        &outside.join("secret.gguf"),
        &ol.join(format!("blobs/sha256-{hex}")),
    );
    write(
        &ol.join("manifests/registry.ollama.ai/library/out/latest"),
        format!(r#"{{"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{hex}"}}]}}"#).as_bytes(),
    );

    // LM Studio: a publisher folder that is a link out.
    let lm = root.join("lmstudio");
    link(&outside.join("pub"), &lm.join("pub"));
    write(&lm.join("acme/repo/fine.gguf"), &demo);

    let sources = Sources::default()
        .with_dir(&dir)
        .with_hf_cache(&hf)
        .with_ollama(&ol)
        .with_lm_studio(&lm);
    let catalog = within(std::time::Duration::from_secs(20), move || {
        Catalog::scan(&sources)
    });
    let mut names: Vec<&str> = catalog.entries().map(|e| e.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "acme/Good-GGUF:good",
            "acme/repo/fine",
            "good",
            "inside/also-good"
        ],
        "skipped: {:#?}",
        catalog.skipped
    );
    let real_root = root.canonicalize().unwrap();
    for e in catalog.entries() {
        let real = e.path.canonicalize().unwrap();
        assert!(
            real.starts_with(&real_root) && !real.starts_with(real_root.join("elsewhere")),
            "{e:?}"
        );
    }
    let why = |end: &str| {
        catalog
            .skipped
            .iter()
            .find(|(p, _)| p.to_string_lossy().ends_with(end))
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| panic!("{end} not skipped: {:#?}", catalog.skipped))
    };
    for end in [
        "linked-out",
        "models/root",
        "file-out.gguf",
        "snapshots/r1/secret.gguf",
        "evil.example",
        "pub",
    ] {
        assert!(
            why(end).contains("a link out of the store"),
            "{end}: {}",
            why(end)
        );
    }
    assert!(why("fifo.gguf").contains("not a regular file"));
    assert!(why("a-link-to-inside").contains("listed under its own path"));
    assert!(why("logged in.gguf").contains("control character"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Regression (audit round 3): a FIFO as the presets file hung start-up, a
/// FIFO or /dev/zero as a preset's template hung or exhausted each load; a
/// preset for a model that is not there was ignored, and an alias equal to
/// another model's name hid that model.
#[test]
#[cfg(unix)]
fn presets_name_only_regular_files_and_models_that_exist() {
    let root = tree_for("presets");
    let fifo_path = root.join("models.toml");
    fifo(&fifo_path);
    let e = within(std::time::Duration::from_secs(10), move || {
        Presets::load(&fifo_path).unwrap_err()
    });
    assert!(e.message.contains("not a regular file"), "{e}");

    for (name, template) in [
        ("dev-zero", PathBuf::from("/dev/zero")),
        ("fifo", root.join("t.fifo")),
    ] {
        if name == "fifo" {
            fifo(&template);
        }
        let path = root.join(format!("{name}.toml"));
        write(
            &path,
            format!(
                "[models.a]\nchat_template_file = {:?}\n",
                template.display().to_string()
            )
            .as_bytes(),
        );
        let e = within(std::time::Duration::from_secs(10), move || {
            Presets::load(&path).unwrap_err()
        });
        assert!(
            e.message.contains("chat_template_file") && e.message.contains("not a regular file"),
            "{name}: {e}"
        );
    }

    let presets = Presets::parse(
        "[models.a]\naliases = [\"b\"]\n[models.ghost]\ncpu_moe = true\n",
        Path::new("p.toml"),
    )
    .unwrap();
    let e = presets.check_against(["a", "b"]).unwrap_err();
    assert!(e.message.contains("\"ghost\""), "{e}");
    let presets = Presets::parse("[models.a]\naliases = [\"b\"]\n", Path::new("p.toml")).unwrap();
    let e = presets.check_against(["a", "b"]).unwrap_err();
    assert!(
        e.message.contains("the alias \"b\"") && e.message.contains("hide"),
        "{e}"
    );
    presets.check_against(["a", "c"]).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}
