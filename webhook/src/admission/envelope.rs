//! The AdmissionReview envelope, parsed for what a decision reads.
//!
//! kube-core's `AdmissionReview` flattens its `TypeMeta` (serde buffers those keys) and
//! parses every field of the request into owned values: the user's name, uid and groups,
//! `requestKind`, `requestResource` and `options` (a `Value`). No decision reads those, so
//! they are skipped while parsing (`userInfo` must still be present, as the API defines
//! it), and the request is handed on as kube-core's `AdmissionRequest` with them empty
//! (BENCHMARKS.md, fourth round). The one path whose rules depend on who asks (`/paths`)
//! parses `userInfo` ([`User`]).

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::gvk::{GroupVersionKind, GroupVersionResource};
use kube::core::{Resource, TypeMeta};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Named as the API names it: serde's messages name the type ("expected struct
/// AdmissionReview").
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AdmissionReview<T, U = IgnoredAny> {
    pub api_version: String,
    pub kind: String,
    pub request: Option<Request<T, U>>,
    /// Makes the envelope a map only, as kube-core's is: a JSON array is refused as "not a
    /// struct AdmissionReview" rather than read field by field. Other keys are ignored.
    #[serde(flatten)]
    _other: IgnoredAny,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Request<T, U = IgnoredAny> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(rename = "userInfo")]
    user_info: U,
    object: Option<T>,
    old_object: Option<T>,
    #[serde(default)]
    dry_run: bool,
}

/// What is kept of `userInfo`: nothing ([`IgnoredAny`]), or all of it ([`UserInfo`]).
pub(super) trait User {
    fn into_user(self) -> UserInfo;
}

impl User for IgnoredAny {
    fn into_user(self) -> UserInfo {
        UserInfo::default()
    }
}

impl User for UserInfo {
    fn into_user(self) -> UserInfo {
        self
    }
}

impl<T: Resource, U: User> Request<T, U> {
    /// kube-core's request, with the envelope's type and without what was skipped.
    pub fn into_admission_request(self, types: TypeMeta) -> AdmissionRequest<T> {
        AdmissionRequest {
            types,
            uid: self.uid,
            kind: self.kind,
            resource: self.resource,
            sub_resource: self.sub_resource,
            request_kind: None,
            request_resource: None,
            request_sub_resource: None,
            name: self.name,
            namespace: self.namespace,
            operation: self.operation,
            user_info: self.user_info.into_user(),
            object: self.object,
            old_object: self.old_object,
            dry_run: self.dry_run,
            options: None,
        }
    }
}
