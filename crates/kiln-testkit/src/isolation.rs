//! The isolation matrix: [`isolation_matrix!`](crate::isolation_matrix)
//! declares an end-to-end case once and generates one test per isolation
//! mode, `NAME::userns` and `NAME::root`, each calling the case with the
//! mode's `--isolation` value. A case that also runs in place (inside
//! podman, against kiln's own image) names that function after `in_place:`
//! and gets a third test, `NAME::in_place`.
//!
//! ```ignore
//! fn copy_through_symlink(isolation: &str) { /* kiln build --isolation {isolation} ... */ }
//! kiln_testkit::isolation_matrix!(copy_through_an_image_symlink => copy_through_symlink);
//! kiln_testkit::isolation_matrix!(layer_shapes => layer_shapes; in_place: layer_shapes_in_podman);
//! ```

/// The `--isolation` values every host-side case runs under.
pub const HOST_MODES: [&str; 2] = ["userns", "root"];

/// One line per end-to-end case: `mod $name { fn userns(); fn root() }`
/// (and `fn in_place()` when given), each a `#[test]` (attributes before
/// the name, such as `#[ignore]`, go on every generated test).
#[macro_export]
macro_rules! isolation_matrix {
    ($(#[$m:meta])* $name:ident => $case:ident $(; in_place: $in_place:ident)?) => {
        mod $name {
            $(#[$m])*
            #[test]
            fn userns() {
                super::$case("userns")
            }
            $(#[$m])*
            #[test]
            fn root() {
                super::$case("root")
            }
            $(
                $(#[$m])*
                #[test]
                fn in_place() {
                    super::$in_place()
                }
            )?
        }
    };
}
