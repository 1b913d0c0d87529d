//! `junit.xml` for CI systems: one suite per plan, one test case per phase and condition.

use crate::model::{PhaseKind, PlanResult};

/// JUnit XML: one suite per plan, one test case per phase and condition.
pub fn junit_xml(result: &PlanResult) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new(format!("maestro {}", result.plan));
    let mut suite = TestSuite::new(result.plan.clone());
    for phase in result.phases.iter().filter(|p| p.judged) {
        let classname = format!("{}.phase{}-{}", result.plan, phase.index, phase.kind);
        let decisive = match phase.kind {
            // Ramp and max-rate are judged by the probe that decided them.
            PhaseKind::Fixed => phase.probes.last(),
            _ => phase
                .probes
                .iter()
                .rev()
                .find(|p| !p.passed)
                .or(phase.probes.last()),
        };
        let Some(probe) = decisive else { continue };
        for v in &probe.verdicts {
            let passed = if phase.kind == PhaseKind::MaxRate {
                phase.passed || v.passed
            } else {
                v.passed
            };
            let status = if passed {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!(
                    "{} failed at {:.0} msg/s: actual {:.3}",
                    v.condition, probe.rate, v.actual
                ));
                s
            };
            let mut case = TestCase::new(v.condition.clone(), status);
            case.set_classname(classname.clone());
            suite.add_test_case(case);
        }
        if let Some(knee) = phase.knee_rate {
            let mut case =
                TestCase::new(format!("knee {knee:.0} msg/s"), TestCaseStatus::success());
            case.set_classname(classname.clone());
            suite.add_test_case(case);
        }
    }
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}
