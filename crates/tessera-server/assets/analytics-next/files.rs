// Written by tests/vendor-analytics.sh 1.84.3: do not edit.
/// The vendored version of @segment/analytics-next.
pub const VERSION: &str = "1.84.3";
/// The standalone build (analytics.min.js) and its gzip twin.
pub const STANDALONE: (&[u8], &[u8]) = (
    include_bytes!("1.84.3/standalone.js"),
    include_bytes!("1.84.3/standalone.js.gz"),
);
/// The lazy chunks: file name, the file, its gzip twin.
pub const CHUNKS: &[(&str, &[u8], &[u8])] = &[
    (
        "407.bundle.61efa1acb302134c434b.js",
        include_bytes!("1.84.3/407.bundle.61efa1acb302134c434b.js"),
        include_bytes!("1.84.3/407.bundle.61efa1acb302134c434b.js.gz"),
    ),
    (
        "ajs-destination.bundle.40628baed746e9904edc.js",
        include_bytes!("1.84.3/ajs-destination.bundle.40628baed746e9904edc.js"),
        include_bytes!("1.84.3/ajs-destination.bundle.40628baed746e9904edc.js.gz"),
    ),
    (
        "auto-track.bundle.f131ce01a05e3a33a8c1.js",
        include_bytes!("1.84.3/auto-track.bundle.f131ce01a05e3a33a8c1.js"),
        include_bytes!("1.84.3/auto-track.bundle.f131ce01a05e3a33a8c1.js.gz"),
    ),
    (
        "legacyVideos.bundle.c8148be87c48a2b6537a.js",
        include_bytes!("1.84.3/legacyVideos.bundle.c8148be87c48a2b6537a.js"),
        include_bytes!("1.84.3/legacyVideos.bundle.c8148be87c48a2b6537a.js.gz"),
    ),
    (
        "queryString.bundle.34b193ada8fe288d1bd1.js",
        include_bytes!("1.84.3/queryString.bundle.34b193ada8fe288d1bd1.js"),
        include_bytes!("1.84.3/queryString.bundle.34b193ada8fe288d1bd1.js.gz"),
    ),
    (
        "remoteMiddleware.bundle.063bbf80c88cda449d9c.js",
        include_bytes!("1.84.3/remoteMiddleware.bundle.063bbf80c88cda449d9c.js"),
        include_bytes!("1.84.3/remoteMiddleware.bundle.063bbf80c88cda449d9c.js.gz"),
    ),
    (
        "schemaFilter.bundle.a6a77355d52c20e3a83d.js",
        include_bytes!("1.84.3/schemaFilter.bundle.a6a77355d52c20e3a83d.js"),
        include_bytes!("1.84.3/schemaFilter.bundle.a6a77355d52c20e3a83d.js.gz"),
    ),
    (
        "tsub-middleware.bundle.89bf07058b3d3b126984.js",
        include_bytes!("1.84.3/tsub-middleware.bundle.89bf07058b3d3b126984.js"),
        include_bytes!("1.84.3/tsub-middleware.bundle.89bf07058b3d3b126984.js.gz"),
    ),
];
