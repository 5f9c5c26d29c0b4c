//! Native admin API over HTTP: CRUD of every object, pagination, errors with
//! field paths, auth.
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requires_the_admin_token() {
    let s = TestServer::start().await;
    let req = hyper::Request::builder()
        .uri(s.url("/admin/v1/tenants"))
        .body(http_body_util::Full::default())
        .expect("req");
    let r = s.send(req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let req = hyper::Request::builder()
        .uri(s.url("/admin/v1/tenants"))
        .header("Authorization", "Bearer wrong")
        .body(http_body_util::Full::default())
        .expect("req");
    assert_eq!(s.send(req).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_of_every_object() {
    let s = TestServer::start().await;
    let r = s
        .admin(Method::POST, "/tenants", Some(json!({"name": "Acme"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let tenant = r.json()["id"].as_u64().expect("tenant id");
    let r = s
        .admin(
            Method::POST,
            "/tenants",
            Some(json!({"name": "Acme EU", "parent_id": tenant})),
        )
        .await;
    assert_eq!(r.json()["parent_id"], tenant);
    let child = r.json()["id"].as_u64().expect("id");

    let r = s
        .admin(
            Method::POST,
            "/api-keys",
            Some(json!({"tenant_id": tenant, "role": "read_write"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    let api_key = r.json()["api_key"]
        .as_str()
        .expect("generated key")
        .to_string();
    assert!(r.json()["shared_key"]
        .as_str()
        .is_some_and(|k| k.len() >= 32));
    let r = s
        .admin(Method::GET, &format!("/api-keys?tenant_id={tenant}"), None)
        .await;
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(1));

    let r = s.admin(Method::POST, "/products", Some(json!({"tenant_id": tenant, "short_code": "app", "name": "App", "authorization_method": "license-key"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    let product = r.json()["id"].as_u64().expect("product id");
    assert_eq!(r.json()["floating_timeout"], 120);
    let r = s.admin(Method::POST, "/products", Some(json!({"tenant_id": tenant, "short_code": "app", "name": "Again", "authorization_method": "user"}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = s
        .admin(
            Method::POST,
            "/customers",
            Some(json!({"tenant_id": tenant, "email": "c@acme.test", "company_name": "Acme"})),
        )
        .await;
    let customer = r.json()["id"].as_u64().expect("customer id");
    let r = s.admin(Method::POST, "/users", Some(json!({"tenant_id": tenant, "email": "u@acme.test", "password": "pw", "customer_id": customer}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    assert!(
        r.json().get("password_hash").is_none(),
        "hash never leaves the server"
    );
    let user = r.json()["id"].as_u64().expect("user id");

    // A license without a key gets a generated one; features are created with it.
    let r = s
        .admin(Method::POST, "/licenses", Some(json!({"product_id": product, "customer_id": customer, "max_activations": 2,
            "features": [{"code": "pro"}, {"code": "meter", "feature_type": "consumption", "max_consumption": 10}]})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    let lic = r.json();
    let lid = lic["id"].as_u64().expect("license id");
    assert!(lic["license_key"].as_str().is_some_and(|k| k.len() == 19));
    assert_eq!(lic["features"].as_array().map(Vec::len), Some(2));

    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{lid}"),
            Some(json!({"max_activations": 5, "metadata": {"a": 1}})),
        )
        .await;
    assert_eq!(r.json()["max_activations"], 5);
    assert_eq!(r.json()["metadata"]["a"], 1);
    let r = s
        .admin(
            Method::POST,
            &format!("/licenses/{lid}/features"),
            Some(json!({"code": "extra", "name": "Extra"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let fid = r.json()["id"].as_u64().expect("feature id");
    let r = s
        .admin(
            Method::POST,
            &format!("/licenses/{lid}/features"),
            Some(json!({"code": "extra"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = s
        .admin(
            Method::PUT,
            &format!("/licenses/{lid}/features/{fid}"),
            Some(json!({"code": "extra", "name": "Renamed"})),
        )
        .await;
    assert_eq!(r.json()["name"], "Renamed");
    assert_eq!(
        s.admin(
            Method::DELETE,
            &format!("/licenses/{lid}/features/{fid}"),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(
            Method::GET,
            &format!("/licenses/{lid}/features/{fid}"),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    let r = s
        .admin(
            Method::PUT,
            &format!("/licenses/{lid}/consumption"),
            Some(json!({"total": 7, "feature_id": lic["features"][1]["id"]})),
        )
        .await;
    assert_eq!(r.json()["features"][1]["total_consumptions"], 7);

    // Objects in use cannot be deleted; the order of deletion matters.
    assert_eq!(
        s.admin(Method::DELETE, &format!("/products/{product}"), None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/tenants/{tenant}"), None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/licenses/{lid}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(Method::GET, &format!("/licenses/{lid}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/products/{product}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/users/{user}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/customers/{customer}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/api-keys/{api_key}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/tenants/{tenant}"), None)
            .await
            .status,
        StatusCode::CONFLICT,
        "child tenant"
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/tenants/{child}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.admin(Method::DELETE, &format!("/tenants/{tenant}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field() {
    let s = TestServer::start().await;
    let r = s
        .admin(Method::POST, "/tenants", Some(json!({"name": 5})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["path"], "name");
    let r = s
        .admin(
            Method::POST,
            "/tenants",
            Some(json!({"name": "x", "colour": "red"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s.admin(Method::POST, "/products", Some(json!({"tenant_id": 1, "short_code": "x", "name": "x", "authorization_method": "user"}))).await;
    assert_eq!(
        (r.status, r.json()["error"]["path"].as_str()),
        (StatusCode::BAD_REQUEST, Some("tenant_id"))
    );
    let tenant = s.admin(Method::GET, "/tenants", None).await.json()["items"][0]["id"]
        .as_u64()
        .expect("tenant");
    let product = s
        .admin(Method::GET, &format!("/products?tenant_id={tenant}"), None)
        .await
        .json()["items"][0]["id"]
        .as_u64()
        .expect("product");
    let r = s.admin(Method::POST, "/licenses", Some(json!({"product_id": product, "features": [{"code": "ok"}, {"code": "x", "feature_type": "weird"}]}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json()["error"]["path"],
        "features[1].feature_type",
        "{:?}",
        r.json()
    );
    let r = s
        .admin(
            Method::POST,
            "/licenses",
            Some(json!({"product_id": product, "validity_period": "someday"})),
        )
        .await;
    assert_eq!(r.json()["error"]["path"], "validity_period");
    let r = s
        .admin(
            Method::POST,
            "/licenses",
            Some(json!({"product_id": product, "license_key": "DEMO-STUDIO-0001"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = s
        .admin(
            Method::POST,
            "/licenses",
            Some(json!({"product_id": product, "id": 5})),
        )
        .await;
    assert_eq!(r.json()["error"]["path"], "id");
    let r = s
        .admin(
            Method::POST,
            "/users",
            Some(json!({"tenant_id": tenant, "email": "x@y.z"})),
        )
        .await;
    assert_eq!(r.json()["error"]["path"], "password");
    let r = s
        .admin(
            Method::POST,
            "/users",
            Some(json!({"tenant_id": tenant, "email": "ALICE@example.com", "password": "p"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = s.admin(Method::POST, "/tenants", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.admin(Method::GET, "/licenses/abc", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.admin(Method::GET, "/licenses/999999999", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.admin(Method::GET, "/licenses?limit=0", None).await.json()["error"]["path"],
        "limit"
    );
    assert_eq!(
        s.admin(Method::GET, "/nothing", None).await.status,
        StatusCode::NOT_FOUND
    );
    // Metadata nested deeper than the log and snapshots can carry is refused
    // (it would make the data directory unreadable at the next start).
    let deep = (0..40).fold(json!(1), |v, _| json!([v]));
    let r = s
        .admin(
            Method::POST,
            "/customers",
            Some(json!({"tenant_id": tenant, "email": "deep@x.y", "metadata": deep})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["path"].clone()),
        (StatusCode::BAD_REQUEST, json!("metadata"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paginated_by_id() {
    let s = TestServer::start().await;
    let tenant = s.admin(Method::GET, "/tenants", None).await.json()["items"][0]["id"]
        .as_u64()
        .expect("tenant");
    let product = s
        .admin(Method::GET, &format!("/products?tenant_id={tenant}"), None)
        .await
        .json()["items"][0]["id"]
        .as_u64()
        .expect("product");
    for i in 0..7 {
        let r = s
            .admin(
                Method::POST,
                "/licenses",
                Some(json!({"product_id": product, "license_key": format!("PAGE-{i}")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut after = 0u64;
    loop {
        let r = s
            .admin(
                Method::GET,
                &format!("/licenses?product_id={product}&limit=3&after={after}"),
                None,
            )
            .await
            .json();
        let items = r["items"].as_array().expect("items").clone();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|l| l["id"].as_u64().expect("id")));
        match r["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(seen.len(), 11, "4 demo studio licenses + 7 new");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_floating_holders_are_readable() {
    let s = TestServer::start().await;
    let tenant = s.app.engine.api_key(API_KEY).expect("key").tenant_id;
    let lic = s
        .app
        .engine
        .product_by_code(tenant, "studio")
        .expect("p")
        .licenses_by_key
        .get("DEMO-STUDIO-0001")
        .expect("l")
        .id;
    let r = s
        .admin(Method::GET, &format!("/licenses/{lic}/devices"), None)
        .await;
    let devs = r.json()["items"].as_array().expect("devices").clone();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0]["hardware_id"], "demo-laptop");
    assert_eq!(devs[0]["info"]["hostname"], "laptop");
    let r = s
        .admin(Method::GET, &format!("/licenses/{lic}/floating"), None)
        .await
        .json();
    assert_eq!(r["features"][0]["code"], "export-4k");
    assert_eq!(r["features"][0]["capacity"], 2);
    let r = s
        .admin(
            Method::PATCH,
            &format!("/licenses/{lic}/devices/unknown"),
            Some(json!({"blacklisted": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s.admin(Method::GET, "/signing-key", None).await.json();
    assert!(r["public_key_pem"]
        .as_str()
        .is_some_and(|p| p.starts_with("-----BEGIN PUBLIC KEY-----")));
}
