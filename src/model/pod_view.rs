//! Partial pods: types that decode only what their reader needs of a Pod and are served by
//! kube-rs as Pods (same kind, group, version and path), so a watcher or an `Api` can use
//! them in place of k8s-openapi's `Pod`. That type holds every optional field inline (2 KiB
//! for the pod and 2 KiB more per container before any is set) and decodes everything; a
//! reader of a few fields skips the rest of the JSON without building it.

/// Implements `kube::Resource` for `$view` as a Pod; `$view` has a `metadata: ObjectMeta`.
macro_rules! pod_view {
    ($view:ty) => {
        impl kube::Resource for $view {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::KIND.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::VERSION.into()
            }
            fn api_version(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::API_VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub(crate) use pod_view;
