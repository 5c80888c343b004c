//! RFC 4180 CSV: CRLF line ends, fields quoted only when they need it.

pub struct Csv {
    out: String,
}

impl Csv {
    pub fn new(header: &[&str]) -> Self {
        let mut csv = Self { out: String::new() };
        csv.row(header.iter().copied());
        csv
    }

    pub fn row<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            if field.contains([',', '"', '\n', '\r']) {
                self.out.push('"');
                self.out.push_str(&field.replace('"', "\"\""));
                self.out.push('"');
            } else {
                self.out.push_str(field);
            }
        }
        self.out.push_str("\r\n");
    }

    /// How long the CSV is so far.
    pub fn bytes_written(&self) -> usize {
        self.out.len()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        let mut csv = Csv::new(&["a", "b"]);
        csv.row(["plain", "say \"hi\", twice"]);
        assert_eq!(
            String::from_utf8(csv.into_bytes()).unwrap(),
            "a,b\r\nplain,\"say \"\"hi\"\", twice\"\r\n"
        );
    }
}
