//! The document's limits are the server's: a JSON body is checked against
//! the `maxLength`, `minLength`, `maxItems` and `minItems` its operation's
//! request schema states, before the handler reads it, and a value outside
//! them is `400 invalid-body` naming the field. Types, required fields and
//! enums are the deserializer's to check; values under `anyOf` (the criteria
//! grammar) are read by their own parser.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::ApiError;

/// The JSON request schema of every operation that has one, with the
/// document's component schemas its `$ref`s point to.
#[derive(Debug, Default)]
pub struct BodySchemas {
    by_operation: HashMap<(Method, String), Value>,
    components: Value,
}

impl BodySchemas {
    pub fn from_document(document: &Value) -> Self {
        let mut by_operation = HashMap::new();
        for (path, item) in document.get("paths").and_then(Value::as_object).into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
                if let (false, Ok(method)) =
                    (schema.is_null(), Method::from_bytes(method.to_ascii_uppercase().as_bytes()))
                {
                    by_operation.insert((method, path.clone()), schema.clone());
                }
            }
        }
        let mut schemas = Self { by_operation, components: document["components"]["schemas"].clone() };
        // A body whose schema sets no limit is not read here: a JSON table import
        // (up to `ingest.max_table_bytes`) would be parsed whole into a tree for nothing.
        let limited: Vec<_> = schemas
            .by_operation
            .iter()
            .filter(|(_, s)| schemas.limits(s, &mut Vec::new()))
            .map(|(k, _)| k.clone())
            .collect();
        schemas.by_operation.retain(|k, _| limited.contains(k));
        schemas
    }

    /// Whether `schema` sets a length or count limit anywhere within it (`seen`:
    /// the components on the way, as the criteria grammar refers to itself).
    fn limits(&self, schema: &Value, seen: &mut Vec<String>) -> bool {
        if let Some(name) = schema.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
            if seen.iter().any(|s| s == name) {
                return false;
            }
            seen.push(name.to_owned());
            return self.limits(&self.components[name], seen);
        }
        let Some(object) = schema.as_object() else { return false };
        ["maxLength", "minLength", "maxItems", "minItems"].iter().any(|k| object.contains_key(*k))
            || object.values().any(|v| match v {
                Value::Object(_) => self.limits(v, seen),
                Value::Array(items) => items.iter().any(|i| self.limits(i, seen)),
                _ => false,
            })
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or_default();
                self.resolve(&self.components[name])
            }
            None => schema,
        }
    }

    /// Whether `body` has the shape of `schema` as far as its keys go: none
    /// unknown, every required one present, each `enum` key with one of its values.
    fn fits(&self, schema: &Value, body: &Value) -> bool {
        let schema = self.resolve(schema);
        let (Some(fields), Some(properties)) = (body.as_object(), schema.get("properties").and_then(Value::as_object))
        else {
            return !body.is_object();
        };
        let required = schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
        fields.iter().all(|(key, value)| {
            properties.get(key).is_some_and(|p| {
                self.resolve(p).get("enum").and_then(Value::as_array).is_none_or(|values| values.contains(value))
            })
        }) && required.into_iter().all(|key| fields.contains_key(key))
    }

    /// The first value of `body` outside a limit of `schema`, as a message naming it.
    pub fn check(&self, schema: &Value, body: &Value, at: &str) -> Option<String> {
        let schema = self.resolve(schema);
        // A nullable value is `oneOf: [schema, {"type": "null"}]`.
        // A tagged enum is `oneOf` objects: the value is outside the limits when
        // every variant it fits the shape of finds it so.
        if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
            if body.is_null() {
                return None;
            }
            let problems: Vec<Option<String>> = variants
                .iter()
                .filter(|v| v["type"] != "null" && self.fits(v, body))
                .map(|v| self.check(v, body, at))
                .collect();
            return if problems.iter().all(Option::is_some) { problems.into_iter().flatten().next() } else { None };
        }
        let bound = |key: &str| schema.get(key).and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok());
        match body {
            Value::String(text) => {
                let chars = text.chars().count();
                if let Some(max) = bound("maxLength").filter(|max| chars > *max) {
                    return Some(format!("`{at}` is longer than {max} characters"));
                }
                if let Some(min) = bound("minLength").filter(|min| chars < *min) {
                    return Some(format!("`{at}` is shorter than {min} character{}", if min == 1 { "" } else { "s" }));
                }
                None
            }
            Value::Array(items) => {
                if let Some(max) = bound("maxItems").filter(|max| items.len() > *max) {
                    return Some(format!("`{at}` has more than {max} items"));
                }
                if let Some(min) = bound("minItems").filter(|min| items.len() < *min) {
                    return Some(format!("`{at}` has fewer than {min} items"));
                }
                let item_schema = schema.get("items")?;
                items.iter().enumerate().find_map(|(i, item)| self.check(item_schema, item, &format!("{at}/{i}")))
            }
            Value::Object(fields) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let all_of = schema.get("allOf").and_then(Value::as_array);
                let own = fields.iter().find_map(|(key, value)| {
                    let property = properties?.get(key)?;
                    self.check(property, value, &format!("{at}/{key}"))
                });
                own.or_else(|| all_of?.iter().find_map(|part| self.check(part, body, at)))
            }
            _ => None,
        }
    }
}

/// Middleware: refuses a JSON body outside its operation's documented limits.
pub async fn enforce(State(schemas): State<Arc<BodySchemas>>, request: Request, next: Next) -> Response {
    let json = super::nul::is_json(&request);
    let Some(schema) = json
        .then(|| request.extensions().get::<MatchedPath>())
        .flatten()
        .and_then(|p| schemas.by_operation.get(&(request.method().clone(), p.as_str().to_owned())))
    else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    // The NUL check ahead has read and bounded the body already.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::PayloadTooLarge.into_response();
    };
    if let Ok(value) = serde_json::from_slice::<Value>(&bytes)
        && let Some(problem) = schemas.check(schema, &value, "")
    {
        return ApiError::InvalidBody(problem).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_bodies_whose_schema_sets_a_limit_are_read_and_a_self_referring_schema_ends() {
        let document = json!({
            "paths": {
                "/tables": {"post": {"requestBody": {"content": {"application/json": {"schema": {"type": "array", "items": {}}}}}}},
                "/titles": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Tree"}}}}}},
                "/loops": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Loop"}}}}}}
            },
            "components": {"schemas": {
                "Tree": {"oneOf": [{"properties": {"any": {"items": {"$ref": "#/components/schemas/Tree"}}}},
                                   {"properties": {"title": {"type": "string", "maxLength": 10}}}]},
                "Loop": {"properties": {"next": {"$ref": "#/components/schemas/Loop"}}}
            }}
        });
        let schemas = BodySchemas::from_document(&document);
        let mut read: Vec<&str> = schemas.by_operation.keys().map(|(_, path)| path.as_str()).collect();
        read.sort_unstable();
        assert_eq!(read, ["/titles"]);
    }
}
