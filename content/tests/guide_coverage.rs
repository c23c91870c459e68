//! The lessons must cover every section of the source guide
//! (`shared/seed/docker-vs-vm-guide.md`). These checks read the real lesson
//! files, so deleting a topic from a lesson fails the build.

use std::path::Path;

use stacklab_content::render::{load_dir, load_glossary};
use stacklab_content::{Block, DemoId, Lesson, StackFocus};

fn lessons() -> Vec<Lesson> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let glossary = load_glossary(&dir.join("glossary.yaml")).expect("glossary parses");
    load_dir(&dir.join("lessons"), &glossary).expect("lessons parse")
}

fn all_html(lessons: &[Lesson]) -> String {
    lessons.iter().map(Lesson::prose_html).collect()
}

#[test]
fn every_guide_section_has_a_heading() {
    let lessons = lessons();
    let headings: Vec<String> = lessons
        .iter()
        .flat_map(|l| l.sections.iter().map(|s| s.title.to_lowercase()))
        .collect();
    // The guide's sections, by the heading a learner would look for.
    for topic in [
        "why the question matters", // Introduction
        "what you need",            // What You'll Need
        "what a virtual machine is made of",
        "the vm stack", // How Virtual Machines Work
        "the container stack",
        "processes, not machines", // How Docker Works
        "key differences",         // Key Differences at a Glance
        "in a virtual machine",    // PostgreSQL: the VM route
        "in a container",          // PostgreSQL: docker run
        "a rule of thumb",         // When to use Docker vs. VMs
        "containers inside vms",   // the middle ground
        "what to keep apart",      // Final thoughts
    ] {
        assert!(
            headings.iter().any(|h| h == topic),
            "no lesson has the section {topic:?}; headings: {headings:?}"
        );
    }
}

#[test]
fn the_differences_table_has_all_six_rows() {
    let html = all_html(&lessons());
    for row in [
        "OS isolation",
        "Resource usage",
        "Startup time",
        "Portability",
        "Security boundary",
        "Use case fit",
    ] {
        assert!(
            html.contains(&format!("<td>{row}</td>")),
            "table row {row:?} missing"
        );
    }
}

#[test]
fn the_docker_run_command_and_each_flag_are_explained() {
    let html = all_html(&lessons());
    assert!(html.contains("docker run --name dev-postgres"));
    for flag in [
        "--name dev-postgres",
        "-e POSTGRES_PASSWORD=devpass",
        "-p 5432:5432",
        "-d",
        "postgres:15",
    ] {
        assert!(
            html.contains(&format!("<li><code>{flag}</code>")),
            "flag {flag:?} is not explained in a list item"
        );
    }
}

#[test]
fn the_vm_facts_of_the_guide_carry_over() {
    let html = all_html(&lessons());
    for fact in [
        "VirtualBox",
        "VMware",
        "KVM",
        "Ubuntu",
        "EC2",
        "Kubernetes",
        "Docker Engine",
        "Images",
        "Containers",
    ] {
        assert!(html.contains(fact), "{fact} is never mentioned");
    }
}

#[test]
fn diagrams_and_both_demos_appear() {
    let blocks: Vec<Block> = lessons()
        .iter()
        .flat_map(|l| l.blocks.iter().cloned())
        .collect();
    for b in [
        Block::StackDiagram(StackFocus::Both),
        Block::StackDiagram(StackFocus::Vm),
        Block::StackDiagram(StackFocus::Container),
        Block::Compare,
    ] {
        assert!(blocks.contains(&b), "{b:?} is used by no lesson");
    }
    for demo in [DemoId::PostgresContainer, DemoId::MicroVm] {
        assert!(
            blocks
                .iter()
                .any(|b| matches!(b, Block::Demo(d, _) if *d == demo)),
            "{demo:?} is used by no lesson"
        );
    }
}

#[test]
fn neighbours_link_the_course_in_order() {
    let lessons = lessons();
    let (prev, next) = lessons[0].neighbours(&lessons);
    assert!(prev.is_none());
    assert_eq!(next.unwrap().slug, lessons[1].slug);
    let last = lessons.last().unwrap();
    assert!(last.neighbours(&lessons).1.is_none());
}
