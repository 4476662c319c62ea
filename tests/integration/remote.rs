//! S3 (moto, SigV4 on) and Azure Blob (Azurite) destinations, against the real servers that
//! `scripts/test` starts: round trips restored with the system tar, multipart/blocks,
//! storage class and access tier, pruning, wrong credentials, a server that vanishes
//! mid-upload, TLS with a private CA, and `check`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::remote::{
    AZURE_ACCOUNT, AZURE_KEY, Azure, Proxy, S3, restore_and_compare, serial, stdout, unique,
};
use crate::common::*;

#[test]
fn s3_round_trip_in_several_parts_with_storage_class_and_content_type() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 16, 7);
    let bucket = s3.bucket();
    let mut cmd = s.backup();
    s3.configure(&mut cmd, &bucket, "/daily/");
    cmd.env("BACKUP_COMPRESSION", "none")
        .env("AWS_PART_SIZE", "5")
        .env("AWS_STORAGE_CLASS", "STANDARD_IA");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let local = s.only_archive();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(s3.keys(&bucket, ""), [format!("daily/{name}")]);
    let head = s3.cli(&["head", &bucket, &format!("daily/{name}")]);
    assert_eq!(head["content_type"], "application/x-tar");
    assert_eq!(head["storage_class"], "STANDARD_IA");
    // A multipart ETag ends in -<parts>: 16 MiB and more in 5 MiB parts.
    let etag = head["etag"].as_str().unwrap();
    let parts: u32 = etag.rsplit_once('-').unwrap().1.parse().unwrap();
    assert!(parts >= 4, "{etag}");

    let fetched = s.tmp.path().join(&name);
    s3.get(&bucket, &format!("daily/{name}"), &fetched);
    assert!(fs::read(&fetched).unwrap() == fs::read(&local).unwrap());
    restore_and_compare(&s, &fetched);
    assert!(s3.open_uploads(&bucket).is_empty());
}

#[test]
fn s3_small_archive_gz_round_trip_in_one_request() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    build_rich_tree(&s.src);
    let bucket = s3.bucket();
    let mut cmd = s.backup();
    s3.configure(&mut cmd, &bucket, "");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0));
    let name = s
        .only_archive()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(s3.keys(&bucket, ""), std::slice::from_ref(&name));
    let head = s3.cli(&["head", &bucket, &name]);
    assert_eq!(head["content_type"], "application/gzip");
    assert!(!head["etag"].as_str().unwrap().contains('-'), "single PUT");
    let fetched = s.tmp.path().join(&name);
    s3.get(&bucket, &name, &fetched);
    restore_and_compare(&s, &fetched);
}

#[test]
fn s3_prune_deletes_old_backups_in_the_folder_only_and_keeps_the_safety_rule() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    fs::write(s.src.join("f"), "data").unwrap();
    let bucket = s3.bucket();
    for key in [
        "app/backup-old-1.tar.gz",
        "app/backup-old-2.tar.gz",
        "app/other-old.tar.gz",
        "app/deeper/backup-old-3.tar.gz",
        "backup-outside.tar.gz",
    ] {
        s3.put_old(&bucket, key, 10, s.tmp.path());
    }
    s3.put_old(&bucket, "app/backup-recent.tar.gz", 2, s.tmp.path());

    // The safety rule: every matching backup is older than 1 day, so `prune` deletes none.
    let mut prune = s.command(&["prune"]);
    s3.configure(&mut prune, &bucket, "app");
    prune
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_SKIP_BACKENDS_FROM_PRUNE", "Local");
    let out = run(&mut prune);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("S3: deleted 0 of 3"),
        "{}",
        stdout(&out)
    );
    assert_eq!(s3.keys(&bucket, "").len(), 6);

    // A backup run prunes after storing: old matching ones go, the rest stays.
    let mut cmd = s.backup();
    s3.configure(&mut cmd, &bucket, "app");
    cmd.env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = s
        .only_archive()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut expected = vec![
        format!("app/{name}"),
        "app/backup-recent.tar.gz".to_owned(),
        "app/deeper/backup-old-3.tar.gz".to_owned(),
        "app/other-old.tar.gz".to_owned(),
        "backup-outside.tar.gz".to_owned(),
    ];
    expected.sort();
    assert_eq!(s3.keys(&bucket, ""), expected);
}

#[test]
fn s3_wrong_credentials_fail_that_destination_only_and_say_why() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    build_rich_tree(&s.src);
    let bucket = s3.bucket();
    let mut cmd = s.backup();
    s3.configure(&mut cmd, &bucket, "");
    cmd.env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-1234");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("S3"), "{err}");
    assert!(
        err.contains("403") || err.contains("SignatureDoesNotMatch"),
        "the cause is named: {err}"
    );
    assert!(!err.contains("wrong-secret-value-1234"), "secret leaked");
    // The local destination is unaffected and complete.
    restore_and_compare(&s, &s.only_archive());
    assert!(s3.keys(&bucket, "").is_empty());
}

#[test]
fn s3_server_gone_mid_upload_leaves_no_object_and_no_open_upload() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 48, 7);
    let bucket = s3.bucket();
    let proxy = Proxy::start(&s3.endpoint);
    let state = s.tmp.path().join("state");
    let mut cmd = s.backup();
    s3.configure(&mut cmd, &bucket, "");
    cmd.env("AWS_ENDPOINT", format!("127.0.0.1:{}", proxy.port))
        .env("AWS_PART_SIZE", "5")
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_STATE_DIR", &state);
    let port = proxy.port;
    // Kill the "server" once a few parts went up.
    let out = proxy.cut_during(&mut cmd, 12 << 20);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("storing the archive in S3 failed"), "{err}");
    // Local is complete; S3 has nothing under any name.
    restore_and_compare(&s, &s.only_archive());
    assert!(s3.keys(&bucket, "").is_empty());
    // The abort could not reach the server either: the upload is remembered...
    let remembered = fs::read_to_string(state.join("s3-unfinished-uploads")).unwrap();
    let open = s3.open_uploads(&bucket);
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(remembered.contains(open[0]["id"].as_str().unwrap()));

    // ...and aborted by the next run once the server is back.
    let _back = Proxy::start_on(&s3.endpoint, port);
    fs::remove_dir_all(&s.src).unwrap();
    fs::create_dir(&s.src).unwrap();
    fs::write(s.src.join("small"), "small").unwrap();
    let mut again = s.backup();
    s3.configure(&mut again, &bucket, "");
    again
        .env("AWS_ENDPOINT", format!("127.0.0.1:{port}"))
        .env("BACKUP_STATE_DIR", &state)
        .env("BACKUP_FILENAME", "second.tar.gz");
    let out = run(&mut again);
    assert_eq!(out.status.code(), Some(0));
    assert!(s3.open_uploads(&bucket).is_empty());
    assert_eq!(s3.keys(&bucket, ""), ["second.tar.gz"]);
    assert!(!state.join("s3-unfinished-uploads").exists());
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it.
fn make_ca(dir: &Path) {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj '/CN=dunnage test CA' 2>/dev/null",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj '/CN=127.0.0.1' 2>/dev/null",
    );
    fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile ext 2>/dev/null",
    );
}

#[test]
fn s3_over_tls_with_a_private_ca() {
    let _serial = serial();
    let s = Setup::new();
    fs::write(s.src.join("f"), "over tls").unwrap();
    make_ca(s.tmp.path());
    // A moto of its own, serving TLS with the private CA's certificate (auth off).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let moto = std::env::var("DUNNAGE_TEST_MOTO").expect("run with scripts/test");
    let mut server = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-s"])
        .arg("-c")
        .arg(s.tmp.path().join("server.pem"))
        .arg("-k")
        .arg(s.tmp.path().join("server.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tls = S3 {
        endpoint: format!("127.0.0.1:{port}"),
        key: "test".into(),
        secret: "test".into(),
        ca: Some(s.tmp.path().join("ca.pem")),
    };
    let url = format!("https://127.0.0.1:{port}");
    // moto's imports alone take seconds on a loaded host.
    let mut ready = false;
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
        let ok = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(s.tmp.path().join("ca.pem"))
            .arg(format!("{url}/moto-api/"))
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        if ok {
            ready = true;
            break;
        }
    }
    assert!(ready, "moto with TLS did not start");
    tls.cli_at(&url, &["make-bucket", "tls"], false);

    let configure = |cmd: &mut Command| {
        tls.configure(cmd, "tls", "");
        cmd.env("AWS_ENDPOINT_PROTO", "https");
    };
    // Without the CA the certificate is refused, with a clear message.
    let mut cmd = s.backup();
    configure(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    fs::remove_file(s.only_archive()).unwrap();

    // With it (as a path, then inline), the backup is stored.
    for value in [
        s.tmp.path().join("ca.pem").display().to_string(),
        fs::read_to_string(s.tmp.path().join("ca.pem")).unwrap(),
    ] {
        let mut cmd = s.backup();
        configure(&mut cmd);
        cmd.env("AWS_ENDPOINT_CA_CERT", &value)
            .env("BACKUP_FILENAME", format!("tls-{}.tar.gz", value.len()));
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let keys: Vec<String> = tls
        .cli_at(&url, &["list", "tls"], false)
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_owned())
        .filter(|k| !k.ends_with(".sha256"))
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn azure_round_trip_in_blocks_with_access_tier() {
    let _serial = serial();
    let azure = Azure::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 6, 7);
    let container = azure.container();
    let mut cmd = s.backup();
    azure.configure(&mut cmd, &container, "nightly");
    cmd.env("BACKUP_COMPRESSION", "zst")
        .env("AZURE_STORAGE_BLOCK_SIZE", "1")
        .env("AZURE_STORAGE_ACCESS_TIER", "cool");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let local = s.only_archive();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    let blob = format!("nightly/{name}");
    assert_eq!(azure.names(&container, ""), std::slice::from_ref(&blob));
    let props = azure.cli(&["props", &container, &blob], false);
    assert_eq!(props["tier"], "Cool");
    assert_eq!(props["content_type"], "application/zstd");
    let blocks = azure.cli(&["blocks", &container, &blob], false);
    assert!(blocks["committed"].as_i64().unwrap() >= 6, "{blocks}");
    let fetched = s.tmp.path().join(&name);
    azure.cli(
        &["get", &container, &blob, fetched.to_str().unwrap()],
        false,
    );
    assert!(fs::read(&fetched).unwrap() == fs::read(&local).unwrap());
    restore_and_compare(&s, &fetched);
}

#[test]
fn azure_connection_string_and_pruning_in_the_folder_only() {
    let _serial = serial();
    let azure = Azure::from_env();
    let s = Setup::new();
    fs::write(s.src.join("f"), "data").unwrap();
    let container = azure.container();
    for name in [
        "app/backup-old-1.tar.gz",
        "app/other-old.tar.gz",
        "app/deeper/backup-old-2.tar.gz",
    ] {
        azure.put_old(&container, name, 10, s.tmp.path());
    }
    let mut cmd = s.backup();
    cmd.env("AZURE_STORAGE_CONNECTION_STRING", azure.connection_string())
        .env("AZURE_STORAGE_CONTAINER_NAME", &container)
        .env("AZURE_STORAGE_PATH", "app/")
        .env("BACKUP_RETENTION_DAYS", "7")
        .env("BACKUP_PRUNING_PREFIX", "backup-");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = s
        .only_archive()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut expected = vec![
        format!("app/{name}"),
        "app/deeper/backup-old-2.tar.gz".to_owned(),
        "app/other-old.tar.gz".to_owned(),
    ];
    expected.sort();
    assert_eq!(azure.names(&container, ""), expected);

    // Safety rule: with only old matching backups, `prune` deletes nothing.
    let mut prune = s.command(&["prune"]);
    prune
        .env("AZURE_STORAGE_CONNECTION_STRING", azure.connection_string())
        .env("AZURE_STORAGE_CONTAINER_NAME", &container)
        .env("AZURE_STORAGE_PATH", "app/deeper")
        .env("BACKUP_RETENTION_DAYS", "1")
        .env("BACKUP_PRUNING_PREFIX", "backup-")
        .env("BACKUP_SKIP_BACKENDS_FROM_PRUNE", "local");
    let out = run(&mut prune);
    assert!(
        stdout(&out).contains("Azure: deleted 0 of 1"),
        "{}",
        stdout(&out)
    );
    assert!(
        azure
            .names(&container, "")
            .contains(&"app/deeper/backup-old-2.tar.gz".to_owned())
    );
}

#[test]
fn azure_wrong_key_fails_that_destination_only() {
    let _serial = serial();
    let azure = Azure::from_env();
    let s = Setup::new();
    build_rich_tree(&s.src);
    let container = azure.container();
    let mut cmd = s.backup();
    azure.configure(&mut cmd, &container, "");
    // A well-formed key that is not the account's.
    let wrong = AZURE_KEY.replace('E', "F");
    cmd.env("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY", &wrong);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("storing the archive in Azure failed")
            && err.contains("AZURE_STORAGE_PRIMARY_ACCOUNT_KEY"),
        "{err}"
    );
    assert!(!err.contains(&wrong));
    restore_and_compare(&s, &s.only_archive());
    assert!(azure.names(&container, "").is_empty());
}

#[test]
fn azure_server_gone_mid_upload_commits_nothing() {
    let _serial = serial();
    let azure = Azure::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 32, 7);
    let container = azure.container();
    let authority = azure.endpoint.trim_start_matches("http://");
    let target = authority.split('/').next().unwrap().to_owned();
    let proxy = Proxy::start(&target);
    let mut cmd = s.backup();
    azure.configure(&mut cmd, &container, "");
    cmd.env(
        "AZURE_STORAGE_ENDPOINT",
        format!("http://127.0.0.1:{}/{{{{ .AccountName }}}}", proxy.port),
    )
    .env("AZURE_STORAGE_BLOCK_SIZE", "2")
    .env("BACKUP_COMPRESSION", "none");
    let out = proxy.cut_during(&mut cmd, 8 << 20);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("storing the archive in Azure failed"), "{err}");
    restore_and_compare(&s, &s.only_archive());
    // Nothing committed: no blob under any name.
    assert!(azure.names(&container, "").is_empty());
}

#[test]
fn check_lists_and_writes_to_every_destination_and_reports_failures() {
    let _serial = serial();
    let s3 = S3::from_env();
    let azure = Azure::from_env();
    let s = Setup::new();
    let bucket = s3.bucket();
    let container = azure.container();
    let mut cmd = s.command(&["check", "--write"]);
    s3.configure(&mut cmd, &bucket, "x");
    azure.configure(&mut cmd, &container, "y");
    let out = run(&mut cmd);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for dest in ["Local", "S3", "Azure"] {
        assert!(
            text.contains(&format!("{dest}: OK: listed")) && text.contains("read back and deleted"),
            "{text}"
        );
    }
    // The test objects are gone again.
    assert!(s3.keys(&bucket, "").is_empty());
    assert!(azure.names(&container, "").is_empty());
    assert!(s.archive_names().is_empty());

    let mut cmd = s.command(&["check"]);
    s3.configure(&mut cmd, &bucket, "x");
    azure.configure(&mut cmd, &container, "y");
    cmd.env("AWS_SECRET_ACCESS_KEY", "nope-nope")
        .env("AZURE_STORAGE_CONTAINER_NAME", "no-such-container");
    let out = run(&mut cmd);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Local: OK"), "{text}");
    assert!(
        text.contains("S3: FAILED") && text.contains("Azure: FAILED"),
        "{text}"
    );
    assert!(!text.contains("nope-nope"));
    let _ = AZURE_ACCOUNT;
}

#[test]
fn one_run_stores_the_same_archive_in_local_s3_and_azure() {
    let _serial = serial();
    let s3 = S3::from_env();
    let azure = Azure::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 12, 7);
    let bucket = s3.bucket();
    let container = azure.container();
    let mut cmd = s.backup();
    s3.configure(&mut cmd, &bucket, "");
    azure.configure(&mut cmd, &container, "");
    cmd.env("AWS_PART_SIZE", "5")
        .env("AZURE_STORAGE_BLOCK_SIZE", "4");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let local = fs::read(s.only_archive()).unwrap();
    let name = s
        .only_archive()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let from_s3 = s.tmp.path().join("from-s3");
    s3.get(&bucket, &name, &from_s3);
    let from_azure = s.tmp.path().join("from-azure");
    azure.cli(
        &["get", &container, &name, from_azure.to_str().unwrap()],
        false,
    );
    assert!(fs::read(&from_s3).unwrap() == local);
    assert!(fs::read(&from_azure).unwrap() == local);
}

#[test]
fn sigterm_during_an_s3_upload_aborts_it() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 64, 7);
    let bucket = s3.bucket();
    let proxy = Proxy::start(&s3.endpoint);
    let mut cmd = multipart_through(&proxy, &s3, &s, &bucket);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(proxy.wait_for_upstream(6 << 20, Duration::from_secs(60)));
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("removed the unfinished upload"), "{err}");
    assert!(s3.keys(&bucket, "").is_empty());
    assert!(s3.open_uploads(&bucket).is_empty());
    // The local partial file is gone too.
    assert!(s.archive_names().is_empty(), "{:?}", s.archive_names());
}

#[test]
fn s3_server_away_for_seconds_mid_upload_does_not_fail_the_run() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 48, 11);
    let bucket = s3.bucket();
    let proxy = Proxy::start(&s3.endpoint);
    let mut cmd = multipart_through(&proxy, &s3, &s, &bucket);
    cmd.env("BACKUP_FILENAME", "outage.tar")
        .env("BACKUP_RETRY_TIMEOUT", "60s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(proxy.wait_for_upstream(12 << 20, Duration::from_secs(60)));
    // The server is unreachable for 8 s in the middle of the multipart upload.
    proxy.kill();
    std::thread::sleep(Duration::from_secs(8));
    let _back = Proxy::start_on(&s3.endpoint, proxy.port);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("WARN") && err.contains("[default] S3: "),
        "{err}"
    );
    assert_eq!(s3.keys(&bucket, ""), ["outage.tar"]);
    let copy = s.tmp.path().join("from-s3.tar");
    s3.get(&bucket, "outage.tar", &copy);
    restore_and_compare(&s, &copy);
    assert!(s3.open_uploads(&bucket).is_empty());
}

#[test]
fn s3_upload_of_a_killed_run_is_aborted_by_the_next_run() {
    let _serial = serial();
    let s3 = S3::from_env();
    let s = Setup::new();
    crate::common::remote::sources_with_random(&s, 48, 13);
    let bucket = s3.bucket();
    let state = s.tmp.path().join("state");
    let proxy = Proxy::start(&s3.endpoint);
    let mut cmd = multipart_through(&proxy, &s3, &s, &bucket);
    cmd.stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    assert!(proxy.wait_for_upstream(8 << 20, Duration::from_secs(60)));
    // kill -9: no clean-up of any kind runs.
    child.kill().unwrap();
    let _ = child.wait();
    let open = s3.open_uploads(&bucket);
    assert_eq!(open.len(), 1, "{open:?}");
    let listed = fs::read_to_string(state.join("s3-unfinished-uploads")).unwrap();
    assert!(listed.contains(open[0]["id"].as_str().unwrap()), "{listed}");

    fs::remove_dir_all(&s.src).unwrap();
    fs::create_dir(&s.src).unwrap();
    fs::write(s.src.join("small"), "small").unwrap();
    let mut again = s.backup();
    s3.configure(&mut again, &bucket, "");
    again
        .env("AWS_ENDPOINT", format!("127.0.0.1:{}", proxy.port))
        .env("BACKUP_STATE_DIR", &state)
        .env("BACKUP_FILENAME", "second.tar.gz");
    let out = run(&mut again);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        s3.open_uploads(&bucket).is_empty(),
        "the killed run's parts are gone"
    );
    assert_eq!(s3.keys(&bucket, ""), ["second.tar.gz"]);
}

/// A backup into `bucket` through `proxy` as a multipart upload of 5 MiB parts, with its
/// state folder in the test's temporary folder.
fn multipart_through(proxy: &Proxy, s3: &S3, s: &Setup, bucket: &str) -> Command {
    let mut cmd = s.backup();
    s3.configure(&mut cmd, bucket, "");
    cmd.env("AWS_ENDPOINT", format!("127.0.0.1:{}", proxy.port))
        .env("AWS_PART_SIZE", "5")
        .env("BACKUP_COMPRESSION", "none")
        .env("BACKUP_STATE_DIR", s.tmp.path().join("state"));
    cmd
}

#[test]
fn s3_buckets_with_object_lock_accept_single_and_multipart_uploads() {
    let _serial = serial();
    let s3 = S3::from_env();
    let bucket = unique("locked");
    s3.cli(&["make-locked-bucket", &bucket]);
    for (sources, part_size) in [(1, "16"), (16, "5")] {
        let s = Setup::new();
        crate::common::remote::sources_with_random(&s, sources, 5);
        let mut cmd = s.backup();
        s3.configure(&mut cmd, &bucket, &format!("p{part_size}"));
        cmd.env("AWS_PART_SIZE", part_size)
            .env("BACKUP_COMPRESSION", "none");
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let name = s
            .only_archive()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let key = format!("p{part_size}/{name}");
        assert_eq!(
            s3.keys(&bucket, &format!("p{part_size}/")),
            std::slice::from_ref(&key)
        );
        let fetched = s.tmp.path().join(&name);
        s3.get(&bucket, &key, &fetched);
        restore_and_compare(&s, &fetched);
    }
}

#[test]
fn common_s3_mistakes_get_one_sentence_naming_the_variable() {
    let _serial = serial();
    let s3 = S3::from_env();
    let bucket = s3.bucket();
    let cases: [(&str, &str, &str); 4] = [
        (
            "AWS_SECRET_ACCESS_KEY",
            "wrong-secret-value-1234",
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            "AWS_ACCESS_KEY_ID",
            "AKIAUNKNOWNKEY000000",
            "AWS_ACCESS_KEY_ID",
        ),
        (
            "AWS_S3_BUCKET_NAME",
            "no-such-bucket-here",
            "does not exist",
        ),
        ("AWS_ENDPOINT_PROTO", "https", "AWS_ENDPOINT_PROTO=http"),
    ];
    for (var, value, want) in cases {
        let s = Setup::new();
        fs::write(s.src.join("f"), "x").unwrap();
        let mut cmd = s.backup();
        s3.configure(&mut cmd, &bucket, "");
        cmd.env(var, value).env("BACKUP_RETRY_TIMEOUT", "1s");
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(1), "{var}");
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.contains("storing the archive in S3 failed"))
            .unwrap_or_else(|| panic!("{var}: {err}"));
        eprintln!("{var}: {line}");
        assert!(line.contains(want), "{var}: want {want:?} in {line}");
        assert!(
            !line.contains("<?xml") && !line.contains("<Error>"),
            "raw XML: {line}"
        );
        assert!(!line.contains("wrong-secret-value-1234"));
    }
}
