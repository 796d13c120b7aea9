//! The few W3C WebDriver calls the browser tests need, as JSON over HTTP to chromedriver
//! (`tests/servers/chromium.sh`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::RealServer;

/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    /// A headless Chromium session with the flags chromium.sh gives. Certificates are not
    /// checked (the gateway's test CA is not in Chromium's store).
    pub async fn start(chromium: &RealServer) -> Browser {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let wd = chromium.get("WEBDRIVER_URL").to_string();
        let args: Vec<&str> = chromium.get("CHROMIUM_ARGS").split(',').collect();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": chromium.get("CHROMIUM_BINARY"), "args": args},
        }}});
        let v: Value = http
            .post(format!("{wd}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"));
        Browser {
            base: format!("{wd}/session/{id}"),
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", None).await;
        v.as_str().unwrap().to_string()
    }

    /// Waits until the browser is at a URL that starts with `prefix`; returns it.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = self.url().await;
            if url.starts_with(prefix) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the browser did not reach {prefix}; it is at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await;
        v.as_str().unwrap().to_string()
    }

    /// Waits until an element matching `css` is on the page; panics with the page's text if
    /// none appears.
    pub async fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["value"][ELEMENT].is_string() {
                return;
            }
            if Instant::now() > deadline {
                let body = self.text("body").await;
                panic!("no {css} on the page; it says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A property of an element (e.g. `value` of an input).
    pub async fn property(&self, css: &str, name: &str) -> String {
        let e = self.element(css).await;
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{e}/property/{name}"),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Resizes the window (CSS pixels), e.g. to a laptop's or a phone's width.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The browser's cookies for the current page: (name, value, the whole cookie).
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self.call(reqwest::Method::GET, "/cookie", None).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
