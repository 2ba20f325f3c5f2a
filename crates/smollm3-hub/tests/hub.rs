//! `smollm3_hub` against its local fake hub (no network): downloads into the standard cache
//! layout, cache hits without requests, offline hits and misses, `REPO:QUANT`, interrupted and
//! stale downloads, and clear errors that name no front end's flag. The cases share one server
//! and one cache and run in order in a single test; endpoint and cache directory are passed
//! explicitly, never through the process environment.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use smollm3_hub::fake_hub::{sha256_hex, FakeHub, COMMIT, PROXY_VARS};
use smollm3_hub::{fetch, repo_cache_dir, resolve, DownloadEvent, HubError, HubOptions, ModelRef};

const REPO: &str = "test-org/Tiny-GGUF";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn options(hub: &FakeHub, cache: &Path, offline: bool) -> HubOptions {
    HubOptions {
        offline,
        endpoint: Some(hub.url.clone()),
        cache_dir: Some(cache.to_path_buf()),
        progress: None,
    }
}

fn file_ref(file: &str) -> ModelRef {
    format!("{REPO}:{file}").parse().unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn hub_download_cache_offline_resume_and_errors() {
    // ureq 2 sends every request through a proxy named in the environment (it ignores
    // NO_PROXY); requests to the fake hub on 127.0.0.1 must not. This is the only test in this
    // binary, so changing its environment affects nothing else.
    // HF_HUB_OFFLINE would turn the online cases into offline ones.
    for var in PROXY_VARS.iter().chain(&["HF_HUB_OFFLINE", "HF_TOKEN"]) {
        std::env::remove_var(var);
    }
    let hub = FakeHub::start();
    let q8 = fixture("smollm3-tiny-q8_0.gguf");
    let q4 = fixture("smollm3-tiny-q4_k_m.gguf");
    hub.add(REPO, "Tiny-Q8_0.gguf", q8.clone());
    hub.add(REPO, "Tiny-Q4_K_M.gguf", q4.clone());
    hub.add(REPO, "README.md", b"# tiny\n".to_vec());
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    hub.add(REPO, "Big-F16.gguf", big.clone());
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let repo_dir = repo_cache_dir(&cache, REPO);
    assert_eq!(repo_dir, cache.join("models--test-org--Tiny-GGUF"));
    let snapshot = repo_dir.join("snapshots").join(COMMIT);

    // 1. A download lands in the cache layout, with progress reported.
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&events);
    let with_progress = HubOptions {
        progress: Some(Box::new(move |e: DownloadEvent<'_>| {
            seen.lock().unwrap().push(format!("{e:?}"));
        })),
        ..options(&hub, &cache, false)
    };
    let got = fetch(&file_ref("Tiny-Q8_0.gguf"), &with_progress).unwrap();
    assert!(got.downloaded);
    assert_eq!(got.path, snapshot.join("Tiny-Q8_0.gguf"));
    assert_eq!(std::fs::read(&got.path).unwrap(), q8);
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    let blob = repo_dir.join("blobs").join(sha256_hex(&q8));
    assert_eq!(
        std::fs::canonicalize(&got.path).unwrap(),
        blob.canonicalize().unwrap()
    );
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events.first().map(String::as_str),
        Some(format!("Start {{ file: \"Tiny-Q8_0.gguf\", total: {} }}", q8.len()).as_str())
    );
    assert!(
        events.contains(&format!(
            "Progress {{ downloaded: {0}, total: {0} }}",
            q8.len()
        )),
        "{events:?}"
    );
    assert!(!hub.requests().is_empty());

    // 2. The second resolve is a cache hit: no request at all.
    hub.clear_log();
    let again = fetch(&file_ref("Tiny-Q8_0.gguf"), &options(&hub, &cache, false)).unwrap();
    assert!(!again.downloaded);
    assert_eq!(again.path, got.path);
    assert_eq!(hub.requests(), Vec::<String>::new());

    // 3. Offline hit, by file and by quantization.
    let offline = options(&hub, &cache, true);
    assert_eq!(
        resolve(&file_ref("Tiny-Q8_0.gguf"), &offline).unwrap(),
        got.path
    );
    let by_quant: ModelRef = format!("{REPO}:Q8_0").parse().unwrap();
    assert_eq!(resolve(&by_quant, &offline).unwrap(), got.path);
    assert_eq!(hub.requests(), Vec::<String>::new());

    // 4. Offline misses name the file, the repository and the directory; the command that
    //    gets the file and the flag that turns downloads off are the binaries' to add.
    let err = resolve(&file_ref("Tiny-Q4_K_M.gguf"), &offline).unwrap_err();
    assert!(matches!(err, HubError::OfflineMiss { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [
        "Tiny-Q4_K_M.gguf",
        REPO,
        &repo_dir.display().to_string(),
        "downloads are off",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    assert!(
        !msg.contains("--offline") && !msg.contains("cargo xtask"),
        "{msg}"
    );
    let quant_q4: ModelRef = format!("{REPO}:q4_k_m").parse().unwrap();
    let err = resolve(&quant_q4, &offline).unwrap_err();
    assert!(matches!(err, HubError::OfflineQuantMiss { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("q4_k_m") && msg.contains(REPO), "{msg}");
    assert!(
        !msg.contains("--quant") && !msg.contains("--offline"),
        "{msg}"
    );
    assert_eq!(hub.requests(), Vec::<String>::new());

    // 5. REPO:QUANT online lists the repository and downloads the matching file.
    let got_q4 = fetch(&quant_q4, &options(&hub, &cache, false)).unwrap();
    assert!(got_q4.downloaded);
    assert_eq!(got_q4.file, "Tiny-Q4_K_M.gguf");
    assert_eq!(std::fs::read(&got_q4.path).unwrap(), q4);
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/models/test-org/Tiny-GGUF")),
        "{:?}",
        hub.requests()
    );
    let missing_quant: ModelRef = format!("{REPO}:q5_k_m").parse().unwrap();
    let msg = resolve(&missing_quant, &options(&hub, &cache, false))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("q5_k_m") && msg.contains("Tiny-Q8_0.gguf"),
        "{msg}"
    );

    // 5b. A file stays found when refs/main moves to a newer commit without it.
    let refs_main = repo_dir.join("refs/main");
    std::fs::write(&refs_main, "fedcba9876543210fedcba9876543210fedcba98").unwrap();
    std::fs::create_dir_all(repo_dir.join("snapshots/fedcba9876543210fedcba9876543210fedcba98"))
        .unwrap();
    assert_eq!(
        resolve(&file_ref("Tiny-Q8_0.gguf"), &offline).unwrap(),
        got.path
    );
    assert_eq!(resolve(&by_quant, &offline).unwrap(), got.path);
    std::fs::write(&refs_main, COMMIT).unwrap();

    // 6. A download cut off halfway leaves only a .part file; the retry resumes it.
    hub.clear_log();
    hub.cut_next_body_at(100_000);
    let big_ref = file_ref("Big-F16.gguf");
    let err = resolve(&big_ref, &options(&hub, &cache, false)).unwrap_err();
    assert!(matches!(err, HubError::Download { .. }), "{err:?}");
    assert!(err.to_string().contains("Big-F16.gguf"), "{err}");
    assert!(!err.to_string().contains("--offline"), "{err}");
    let big_sha = sha256_hex(&big);
    assert!(!snapshot.join("Big-F16.gguf").exists());
    assert!(std::fs::symlink_metadata(snapshot.join("Big-F16.gguf")).is_err());
    assert!(!repo_dir.join("blobs").join(&big_sha).exists());
    let part = repo_dir.join("blobs").join(format!("{big_sha}.part"));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 100_000);
    // Not even offline mode takes the partial file for the model.
    assert!(matches!(
        resolve(&big_ref, &options(&hub, &cache, true)),
        Err(HubError::OfflineMiss { .. })
    ));
    let path = resolve(&big_ref, &options(&hub, &cache, false)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), big);
    assert!(!part.exists());
    assert!(
        hub.requests().iter().any(|r| r.ends_with("bytes=100000-")),
        "no resume request: {:?}",
        hub.requests()
    );

    // 7. A partial file that cannot be resumed (longer than the file) is restarted.
    let tmp2 = tempfile::tempdir().unwrap();
    let cache2 = tmp2.path().to_path_buf();
    let blobs2 = repo_cache_dir(&cache2, REPO).join("blobs");
    std::fs::create_dir_all(&blobs2).unwrap();
    std::fs::write(
        blobs2.join(format!("{}.part", sha256_hex(&q8))),
        vec![0u8; q8.len() + 10],
    )
    .unwrap();
    let path = resolve(&file_ref("Tiny-Q8_0.gguf"), &options(&hub, &cache2, false)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), q8);
    // So is a complete partial file whose rename did not happen (the server answers 416).
    let tmp3 = tempfile::tempdir().unwrap();
    let cache3 = tmp3.path().to_path_buf();
    let blobs3 = repo_cache_dir(&cache3, REPO).join("blobs");
    std::fs::create_dir_all(&blobs3).unwrap();
    std::fs::write(blobs3.join(format!("{}.part", sha256_hex(&q8))), &q8).unwrap();
    let path = resolve(&file_ref("Tiny-Q8_0.gguf"), &options(&hub, &cache3, false)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), q8);

    // 8. A body shorter than announced is not kept; the next attempt downloads it again.
    let tmp4 = tempfile::tempdir().unwrap();
    let cache4: PathBuf = tmp4.path().to_path_buf();
    hub.short_next_body();
    let err = resolve(&file_ref("Tiny-Q8_0.gguf"), &options(&hub, &cache4, false)).unwrap_err();
    assert!(matches!(err, HubError::Incomplete { .. }), "{err:?}");
    assert!(err.to_string().contains("the file was removed"), "{err}");
    let snap4 = repo_cache_dir(&cache4, REPO).join("snapshots").join(COMMIT);
    assert!(!snap4.join("Tiny-Q8_0.gguf").exists());
    assert!(std::fs::symlink_metadata(snap4.join("Tiny-Q8_0.gguf")).is_err());
    assert_eq!(
        files_in(&repo_cache_dir(&cache4, REPO).join("blobs"))
            .iter()
            .filter(|f| !f.ends_with(".lock"))
            .count(),
        0
    );
    let path = resolve(&file_ref("Tiny-Q8_0.gguf"), &options(&hub, &cache4, false)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), q8);

    // 9. Clear errors: a missing file, a missing repository, a server that is not a hub, and
    //    nothing listening.
    let msg = resolve(&file_ref("Nope.gguf"), &options(&hub, &cache, false))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Nope.gguf") && msg.contains("404") && msg.contains(REPO),
        "{msg}"
    );
    let msg = resolve(
        &"nobody/nothing:q4_k_m".parse().unwrap(),
        &options(&hub, &cache, false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("nobody/nothing") && msg.contains("HF_TOKEN"),
        "{msg}"
    );
    hub.omit_commit_header(true);
    let err = resolve(&file_ref("README.md.gguf"), &options(&hub, &cache, false)).unwrap_err();
    assert!(matches!(err, HubError::FileNotFound { .. }), "{err:?}");
    hub.add(REPO, "Other.gguf", b"GGUF....".to_vec());
    let msg = resolve(&file_ref("Other.gguf"), &options(&hub, &cache, false))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("x-repo-commit") && msg.contains(&hub.url),
        "{msg}"
    );
    hub.omit_commit_header(false);
    let dead = HubOptions {
        endpoint: Some("http://127.0.0.1:9".to_string()),
        ..options(&hub, &cache, false)
    };
    let msg = resolve(&file_ref("Other.gguf"), &dead)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Other.gguf") && msg.contains("127.0.0.1:9"),
        "{msg}"
    );
}
