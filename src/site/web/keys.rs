//! The user page's API keys section: the key just made (shown this once, with a copy
//! button), the form to make one, and the user's keys with a revoke button each. Every form
//! carries the session's CSRF token.

use maud::{Markup, html};

use super::page::{EXPIRY_DAYS, View, time};
use crate::db::api_keys::KeyRecord;

fn key_state(k: &KeyRecord, now: i64) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

/// The keys section; `csrf` goes into every form.
pub fn section(v: &View<'_>, csrf: &str) -> Markup {
    html! {
        section aria-labelledby="keys-h" {
            h2 id="keys" { span id="keys-h" { "Your API keys" } }
            p { "Scripts send a key as " code { "Authorization: Bearer KEY" } " or "
                code { "X-API-Key: KEY" } ". It acts as you, with your groups of now." }
            @if let Some(k) = &v.new_key {
                div.newkey role="region" aria-labelledby="newkey-h" {
                    h3 id="newkey-h" { "Your new key" }
                    p { "Copy it now: it is shown only this once." }
                    div.copyrow {
                        code id="new-key" { (k) }
                        button type="button" data-copy="new-key" id="copy-key" { "Copy" }
                    }
                    p.copied role="status" aria-live="polite" id="copy-status" {}
                }
            }
            @if v.cfg.scopes.is_empty() {
                p.empty { "No route of this gateway takes API keys, so none can be made here." }
            } @else {
            form.create method="post" action="/-/web/keys" aria-labelledby="create-h" {
                h3 id="create-h" { "Create a key" }
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="key-name" { "Name" }
                    input id="key-name" name="name" required maxlength="100"
                        placeholder="e.g. laptop scripts";
                }
                div.field {
                    label for="key-expiry" { "Expires after" }
                    select id="key-expiry" name="expires_days" {
                        @for d in EXPIRY_DAYS {
                            option value=(d) { (d) @if *d == 1 { " day" } @else { " days" } }
                        }
                    }
                }
                @if v.cfg.scopes.len() > 1 {
                    fieldset {
                        legend { "Only for these routes (none ticked: every route you may use)" }
                        @for s in &v.cfg.scopes {
                            label.check {
                                input type="checkbox" name="scope" value=(s);
                                " " (s)
                            }
                        }
                    }
                }
                div.field.actions { button type="submit" id="create-key" { "Create key" } }
            }
            }
            @if v.keys.is_empty() {
                p.empty { "You have no API keys." }
            } @else {
                div.scroll {
                    table.keys id="keys-table" {
                        caption { "Your keys, newest first" }
                        thead {
                            tr {
                                th scope="col" { "Name" } th scope="col" { "ID" }
                                th scope="col" { "Scopes" } th scope="col" { "Created" }
                                th scope="col" { "Last used" } th scope="col" { "Expires" }
                                th scope="col" { "State" }
                                th scope="col" { span.sr { "Actions" } }
                            }
                        }
                        tbody {
                            @for k in v.keys {
                                @let state = key_state(k, v.now);
                                tr data-key=(k.id) {
                                    th scope="row" { (k.name) }
                                    td { code { (k.id) } }
                                    td { @if k.scopes.is_empty() { "all routes" } @else { (k.scopes.join(", ")) } }
                                    td { (time(k.created_at)) }
                                    td { @match k.last_used_at { Some(t) => (time(t)), None => "never" } }
                                    td { @match k.expires_at { Some(t) => (time(t)), None => "never" } }
                                    td { span class={ "state " (state) } { (state) } }
                                    td {
                                        @if state == "active" {
                                            form.inline method="post" action="/-/web/keys/revoke" {
                                                input type="hidden" name="csrf" value=(csrf);
                                                input type="hidden" name="id" value=(k.id);
                                                button type="submit" class="danger"
                                                    aria-label={ "Revoke key " (k.name) } { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
