//! `GET /uploads` on a real server: the 50 most recent by default, `limit`,
//! `status`, `folder` and `cursor` to narrow and page, `next_cursor` while
//! more follow, and a 422 naming each bad parameter.

mod common;

use common::*;

/// Every page of `query`, following `next_cursor`.
async fn follow(t: &TestServer, key: &str, query: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = t.url(&format!("/uploads?{query}"));
    loop {
        let (code, page) = get_json(&t.client, &url, key).await;
        assert_eq!(code, 200, "{page}");
        pages.push(page_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => url = t.url(&format!("/uploads?{query}&cursor={cursor}")),
            None => return pages,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_paged_and_filtered_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "paging");
    let t = TestServer::start(test_config(dir.path())).await;
    // Six that fail (status 7) in two folders, then one that completes (6).
    let mut created = Vec::new();
    for i in 0..6 {
        let folder = if i % 2 == 0 { "root/a" } else { "root/b" };
        let done = upload_to_end(&t, &key, "not-a-video.txt", folder).await;
        assert_eq!(done["status"], 7, "{done}");
        created.push(done["id"].as_str().unwrap().to_string());
    }
    let done = upload_to_end(&t, &key, "sample.mp4", "root/a").await;
    assert_eq!(done["status"], 6, "{done}");
    created.push(done["id"].as_str().unwrap().to_string());
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    // No parameters: all of them (fewer than 50), and no cursor.
    let (code, all) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    assert_eq!(page_ids(&all), newest_first);
    assert!(all.get("next_cursor").is_none(), "{all}");

    let pages = follow(&t, &key, "limit=3").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), newest_first);

    let failed_in_a = follow(&t, &key, "status=7&folder=root/a&limit=1").await;
    assert_eq!(
        failed_in_a.concat(),
        [created[4].clone(), created[2].clone(), created[0].clone()]
    );
    let completed = follow(&t, &key, "status=6").await;
    assert_eq!(completed.concat(), [created[6].clone()]);
    let in_b = follow(&t, &key, "folder=root%2Fb&limit=2").await;
    assert_eq!(
        in_b.concat(),
        [created[5].clone(), created[3].clone(), created[1].clone()]
    );
    assert!(follow(&t, &key, "status=1").await.concat().is_empty());
    // A folder is matched exactly, not as a prefix.
    assert!(follow(&t, &key, "folder=root").await.concat().is_empty());
    // Another tenant sees none of them, and parameters it does not know are ignored.
    let other = create_key(dir.path(), "other");
    let (_, theirs) = get_json(&t.client, &t.url("/uploads?limit=5&_=1"), &other).await;
    assert!(page_ids(&theirs).is_empty(), "{theirs}");

    // Bad parameters: 422, naming each.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("limit=5&limit=6", "limit"),
        ("status=2", "status"),
        ("status=completed", "status"),
        ("folder=root/../etc", "folder"),
        ("folder=", "folder"),
        ("cursor=abc", "cursor"),
        ("cursor=", "cursor"),
    ] {
        let (code, body) = get_json(&t.client, &t.url(&format!("/uploads?{query}")), &key).await;
        assert_eq!(code, 422, "{query}: {body}");
        assert_eq!(body["code"], "validation_failed", "{query}: {body}");
        assert!(body["errors"][field].is_array(), "{query}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (code, body) = get_json(&t.client, &t.url("/uploads?limit=0&status=9"), &key).await;
    assert_eq!(code, 422);
    assert!(body["errors"]["limit"].is_array() && body["errors"]["status"].is_array());
    t.server.shutdown().await;
}
