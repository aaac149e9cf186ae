//! The `School` fixture: a small directory, a device and accounts to act as; the helpers
//! that create its parts; and the roll call on it: open a session, scan, close.

use serde_json::{Value, json};

use super::{TEACHER_PASSWORD, TestApp};

/// A small school: one dep-batch, three sections, a teacher with a course over the first
/// two, a second teacher with a course over the third, students in the first two (and one
/// outsider in the third), and a registered device.
pub struct School {
    pub admin: String,
    pub teacher: String,
    pub teacher_id: String,
    pub other_teacher: String,
    pub other_teacher_id: String,
    pub dep_batch_id: String,
    pub sections: Vec<String>,
    pub course_id: String,
    pub other_course_id: String,
    pub students: Vec<String>,
    pub outsider: String,
    pub device_code: String,
    pub device_key: String,
    pub device_row_id: String,
}

impl TestApp {
    /// Creates a teacher with a login and returns (teacher id, access token).
    pub async fn create_teacher(&self, admin: &str, code: &str) -> (String, String) {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateTeacherInput!) { createTeacher(input: $i) { id } }",
                json!({"i": {"teacherCode": code, "firstName": "T", "lastName": code,
                             "username": code.to_lowercase(), "password": TEACHER_PASSWORD}}),
            )
            .await;
        let id = data["createTeacher"]["id"].as_str().unwrap().to_owned();
        let token = self.login(&code.to_lowercase(), TEACHER_PASSWORD).await;
        (id, token)
    }

    pub async fn create_section(&self, admin: &str, dep_batch_id: &str, name: &str) -> String {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateSectionInput!) { createSection(input: $i) { id } }",
                json!({"i": {"name": name, "depBatchId": dep_batch_id}}),
            )
            .await;
        data["createSection"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_student(&self, admin: &str, code: &str, section_id: &str) -> String {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
                json!({"i": {"studentCode": code, "firstName": "S", "lastName": code, "sectionId": section_id}}),
            )
            .await;
        data["createStudent"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_course(
        &self,
        admin: &str,
        code: &str,
        teacher_id: &str,
        sections: &[&str],
    ) -> String {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: CreateCourseInput!) { createCourse(input: $i) { id } }",
                json!({"i": {"name": format!("Course {code}"), "code": code, "teacherId": teacher_id, "sectionIds": sections}}),
            )
            .await;
        data["createCourse"]["id"].as_str().unwrap().to_owned()
    }

    /// Registers a device and returns (row id, key).
    pub async fn register_device(&self, admin: &str, code: &str) -> (String, String) {
        let data = self
            .gql_ok(
                Some(admin),
                "mutation($i: RegisterDeviceInput!) { registerDevice(input: $i) { apiKey device { id } } }",
                json!({"i": {"deviceId": code, "name": "Room 1"}}),
            )
            .await;
        (
            data["registerDevice"]["device"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
            data["registerDevice"]["apiKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    /// Seeds a small school with `per_section` students in each of two sections.
    pub async fn seed_school(&self, per_section: usize) -> School {
        let admin = self.admin_token().await;
        let data = self
            .gql_ok(
                Some(&admin),
                "mutation { createDepBatch(input: {dep: \"Software Eng.\", batch: \"2024\"}) { id } }",
                json!({}),
            )
            .await;
        let dep_batch_id = data["createDepBatch"]["id"].as_str().unwrap().to_owned();
        let s1 = self.create_section(&admin, &dep_batch_id, "A").await;
        let s2 = self.create_section(&admin, &dep_batch_id, "B").await;
        let s3 = self.create_section(&admin, &dep_batch_id, "C").await;
        let (teacher_id, teacher) = self.create_teacher(&admin, "T001").await;
        let (other_teacher_id, other_teacher) = self.create_teacher(&admin, "T002").await;
        let course_id = self
            .create_course(&admin, "SE101", &teacher_id, &[&s1, &s2])
            .await;
        let other_course_id = self
            .create_course(&admin, "SE201", &other_teacher_id, &[&s3])
            .await;
        let mut students = Vec::new();
        for (i, section) in [&s1, &s2].iter().enumerate() {
            for n in 0..per_section {
                students.push(
                    self.create_student(&admin, &format!("ST{i}{n:03}"), section)
                        .await,
                );
            }
        }
        let outsider = self.create_student(&admin, "OUT001", &s3).await;
        let (device_row_id, device_key) = self.register_device(&admin, "DEV-01").await;
        School {
            admin,
            teacher,
            teacher_id,
            other_teacher,
            other_teacher_id,
            dep_batch_id,
            sections: vec![s1, s2, s3],
            course_id,
            other_course_id,
            students,
            outsider,
            device_code: "DEV-01".into(),
            device_key,
            device_row_id,
        }
    }

    /// Opens a session as `token` with `input` (a `CreateSessionInput`); returns its id.
    pub async fn create_session(&self, token: &str, input: Value) -> String {
        let data = self
            .gql_ok(
                Some(token),
                "mutation($i: CreateSessionInput!) { createSession(input: $i) { id } }",
                json!({"i": input}),
            )
            .await;
        data["createSession"]["id"].as_str().unwrap().to_owned()
    }

    /// Opens a session for the school's course on its device (as its teacher); returns its id.
    pub async fn open_session(&self, school: &School) -> String {
        self.create_session(
            &school.teacher,
            json!({"courseId": school.course_id, "deviceId": school.device_code}),
        )
        .await
    }

    /// Opens a session for the school's course on `device` (as its teacher) that starts at
    /// midnight, so any time of today up to the clock's now falls inside it; returns its id.
    pub async fn open_session_from_midnight(&self, school: &School, device: &str) -> String {
        self.create_session(
            &school.teacher,
            json!({"courseId": school.course_id, "deviceId": device, "startTime": "00:00:00"}),
        )
        .await
    }

    /// Scans `student` on the school's device at `time` of today (the server's date).
    pub async fn scan_today(&self, school: &School, student: &str, time: &str) -> (u16, Value) {
        self.scan(&school.device_key, student, &self.today(), time)
            .await
    }

    /// Scans `student` on the school's device now, by the server's clock (which may be a
    /// test's manual clock).
    pub async fn scan_now(&self, school: &School, student: &str) -> (u16, Value) {
        self.scan_today(school, student, &self.now_time()).await
    }

    /// Opens a session for the school's course and scans `student` in it now; fails unless
    /// the scan is taken. Returns the session's id and the scanned record.
    pub async fn open_session_and_scan(&self, school: &School, student: &str) -> (String, Value) {
        let session = self.open_session(school).await;
        let (status, record) = self.scan_now(school, student).await;
        assert_eq!(status, 201, "{record}");
        (session, record)
    }

    /// Closes `session` as `token`; returns how many were marked absent.
    pub async fn close_session(&self, token: &str, session: &str) -> i64 {
        let data = self
            .gql_ok(
                Some(token),
                "mutation($id: ID!) { closeSession(id: $id) { markedAbsent } }",
                json!({"id": session}),
            )
            .await;
        data["closeSession"]["markedAbsent"]
            .as_i64()
            .expect("markedAbsent")
    }
}

/// The record of `student` among the `records` of `session`, a session in a GraphQL answer.
pub fn student_record<'a>(session: &'a Value, student: &str) -> &'a Value {
    session["records"]
        .as_array()
        .expect("the session's records")
        .iter()
        .find(|r| r["studentId"] == student)
        .unwrap_or_else(|| panic!("no record of student {student}: {session}"))
}
