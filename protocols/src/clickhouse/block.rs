//! Walking an uncompressed Native-format Block to find where it ends, without decoding values.
//!
//! ```text
//! BlockInfo: { VarUInt field_id; field body }* VarUInt 0
//! VarUInt n_columns, VarUInt n_rows
//! per column: String name, String type, [>= 54454: UInt8 has_custom_serialization],
//!             data (only when n_rows > 0): bulk state prefix, then the values
//! ```
//!
//! Fixed-width values are skipped by `rows × width` (possibly beyond the buffer: the driver
//! discards those bytes unbuffered), `String` values are walked one length at a time, and the
//! composite types (Nullable, Array, Tuple, Map, LowCardinality, Nested, geo types,
//! SimpleAggregateFunction) are walked through their streams. Types whose layout is opaque or
//! stateful (AggregateFunction, Variant, Dynamic, JSON/Object, custom serializations such as
//! sparse) stop the walk with [`WalkError::Unwalkable`]: the caller then resynchronises.
//!
//! The walker is resumable: [`BlockWalker::step`] consumes what the buffer holds and keeps its
//! position (a small task stack) for the next call, so a block of any size needs no buffering.
//! Its vectors are reused from block to block: no allocation per packet in steady state.
use super::wire::{Cursor, WireError, MAX_NAME};

/// Nesting deeper than this in a type name is treated as garbage.
const MAX_TYPE_DEPTH: u8 = 32;
/// More columns than this in one block is treated as garbage.
const MAX_COLUMNS: u64 = 1 << 20;
/// More rows than this in one block is treated as garbage.
const MAX_ROWS: u64 = 1 << 40;

/// One node of a parsed column type. Children are indices into the same arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// Every value is this many bytes.
    Fixed(u32),
    /// `VarUInt len` + bytes per value.
    String,
    /// A null map (one byte per row), then the nested column.
    Nullable(u16),
    /// Cumulative UInt64 offsets per row, then the nested column with the last offset's rows.
    Array(u16),
    /// Each element column in turn, all with the same rows; children at
    /// `tuple_children[first..first + len]`.
    Tuple { first: u16, len: u16 },
    /// Dictionary-encoded column; the child is the dictionary's type (without Nullable).
    LowCardinality(u16),
    /// A type this walker cannot skip.
    Unwalkable,
}

/// Parsed type trees of the current column.
#[derive(Debug, Default)]
pub(crate) struct TypeArena {
    nodes: Vec<ColumnType>,
    tuple_children: Vec<u16>,
}

impl TypeArena {
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.tuple_children.clear();
    }

    fn push(&mut self, t: ColumnType) -> Result<u16, ()> {
        if self.nodes.len() >= u16::MAX as usize {
            return Err(());
        }
        self.nodes.push(t);
        Ok((self.nodes.len() - 1) as u16)
    }

    /// Parses a type name such as `Array(Nullable(String))`; returns the root node.
    pub fn parse(&mut self, name: &[u8]) -> Result<u16, ()> {
        let mut p = TypeNameParser { s: name, pos: 0 };
        let root = p.parse_type(self, 0)?;
        p.skip_ws();
        if p.pos != name.len() {
            return Err(());
        }
        Ok(root)
    }

    pub fn get(&self, i: u16) -> ColumnType {
        self.nodes[i as usize]
    }

    /// Bytes of the bulk state prefix of a column of this type: 8 per LowCardinality node.
    fn prefix_len(&self, i: u16) -> Result<u64, &'static str> {
        Ok(match self.get(i) {
            ColumnType::Fixed(_) | ColumnType::String => 0,
            ColumnType::Nullable(c) | ColumnType::Array(c) => self.prefix_len(c)?,
            ColumnType::LowCardinality(_) => 8,
            ColumnType::Tuple { first, len } => {
                let mut n = 0;
                for k in first..first + len {
                    n += self.prefix_len(self.tuple_children[k as usize])?;
                }
                n
            }
            ColumnType::Unwalkable => return Err("column type cannot be walked"),
        })
    }
}

struct TypeNameParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl TypeNameParser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ident(&mut self) -> &[u8] {
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
        {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// An element name in Tuple/Nested: a plain or back-quoted identifier followed by a type.
    fn skip_element_name(&mut self) {
        let save = self.pos;
        if self.peek() == Some(b'`') {
            self.pos += 1;
            while let Some(b) = self.peek() {
                self.pos += 1;
                if b == b'\\' {
                    self.pos += 1;
                } else if b == b'`' {
                    break;
                }
            }
            self.skip_ws();
            return;
        }
        let id_len = self.ident().len();
        let after_ident = self.pos;
        self.skip_ws();
        let followed_by_word = self.pos > after_ident
            && self
                .peek()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if id_len == 0 || !followed_by_word {
            self.pos = save;
        }
    }

    /// Skips a parenthesised literal argument list (quotes may hold any byte), returning it.
    fn literal_args(&mut self) -> Result<&[u8], ()> {
        if self.peek() != Some(b'(') {
            return Ok(&[]);
        }
        self.pos += 1;
        let start = self.pos;
        let mut depth = 1u32;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\'' | b'"' | b'`' => {
                    while let Some(q) = self.peek() {
                        self.pos += 1;
                        if q == b'\\' {
                            self.pos += 1;
                        } else if q == b {
                            break;
                        }
                    }
                }
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(&self.s[start..self.pos - 1]);
                    }
                }
                _ => {}
            }
        }
        Err(())
    }

    fn expect(&mut self, b: u8) -> Result<(), ()> {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    /// `(T1, T2, ...)` with optional element names; returns the element nodes' positions in
    /// `tuple_children`.
    fn type_list(
        &mut self,
        arena: &mut TypeArena,
        depth: u8,
        named: bool,
    ) -> Result<(u16, u16), ()> {
        self.expect(b'(')?;
        let mut elems: [u16; 64] = [0; 64];
        let mut n = 0usize;
        loop {
            self.skip_ws();
            if named {
                self.skip_element_name();
            }
            let t = self.parse_type(arena, depth + 1)?;
            if n == elems.len() {
                return Err(());
            }
            elems[n] = t;
            n += 1;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(()),
            }
        }
        let first = arena.tuple_children.len();
        if first + n > u16::MAX as usize {
            return Err(());
        }
        arena.tuple_children.extend_from_slice(&elems[..n]);
        Ok((first as u16, n as u16))
    }

    fn parse_type(&mut self, arena: &mut TypeArena, depth: u8) -> Result<u16, ()> {
        if depth > MAX_TYPE_DEPTH {
            return Err(());
        }
        self.skip_ws();
        let name_start = self.pos;
        let name_len = self.ident().len();
        let name = &self.s[name_start..name_start + name_len];
        self.skip_ws();
        if let Some(w) = fixed_width(name) {
            // DateTime('tz'), DateTime64(3, 'tz'), Enum8('a' = 1), Decimal32(2), Time64(3)...
            self.literal_args()?;
            return arena.push(ColumnType::Fixed(w));
        }
        let t = match name {
            b"String" | b"JSONString" => {
                self.literal_args()?;
                ColumnType::String
            }
            b"FixedString" => {
                let n = parse_uint(self.literal_args()?).ok_or(())?;
                ColumnType::Fixed(u32::try_from(n).map_err(|_| ())?)
            }
            b"Decimal" => {
                let args = self.literal_args()?;
                let precision_end = args.iter().position(|&b| b == b',').unwrap_or(args.len());
                let p = parse_uint(&args[..precision_end]).ok_or(())?;
                ColumnType::Fixed(match p {
                    0..=9 => 4,
                    10..=18 => 8,
                    19..=38 => 16,
                    _ => 32,
                })
            }
            b"Nullable" => {
                self.expect(b'(')?;
                let c = self.parse_type(arena, depth + 1)?;
                self.expect(b')')?;
                ColumnType::Nullable(c)
            }
            b"Array" => {
                self.expect(b'(')?;
                let c = self.parse_type(arena, depth + 1)?;
                self.expect(b')')?;
                ColumnType::Array(c)
            }
            b"LowCardinality" => {
                self.expect(b'(')?;
                let mut c = self.parse_type(arena, depth + 1)?;
                self.expect(b')')?;
                // The dictionary holds the non-nullable values (NULL is index 0).
                if let ColumnType::Nullable(inner) = arena.get(c) {
                    c = inner;
                }
                ColumnType::LowCardinality(c)
            }
            b"Tuple" => {
                let (first, len) = self.type_list(arena, depth, true)?;
                ColumnType::Tuple { first, len }
            }
            b"Nested" => {
                let (first, len) = self.type_list(arena, depth, true)?;
                let tuple = arena.push(ColumnType::Tuple { first, len })?;
                ColumnType::Array(tuple)
            }
            b"Map" => {
                let (first, len) = self.type_list(arena, depth, false)?;
                if len != 2 {
                    return Err(());
                }
                let tuple = arena.push(ColumnType::Tuple { first, len })?;
                ColumnType::Array(tuple)
            }
            b"SimpleAggregateFunction" => {
                // (function[(params)], T): the values are plain T.
                self.expect(b'(')?;
                self.skip_ws();
                self.ident();
                self.skip_ws();
                self.literal_args()?;
                self.expect(b',')?;
                let c = self.parse_type(arena, depth + 1)?;
                self.expect(b')')?;
                return Ok(c);
            }
            b"Point" => return geo(arena, 0),
            b"Ring" | b"LineString" => return geo(arena, 1),
            b"Polygon" | b"MultiLineString" => return geo(arena, 2),
            b"MultiPolygon" => return geo(arena, 3),
            b"" => return Err(()),
            _ => {
                // AggregateFunction, Variant, Dynamic, JSON, Object, QBit, unknown names.
                self.literal_args()?;
                ColumnType::Unwalkable
            }
        };
        arena.push(t)
    }
}

/// Point = Tuple(Float64, Float64), each level up one Array.
fn geo(arena: &mut TypeArena, levels: u8) -> Result<u16, ()> {
    let x = arena.push(ColumnType::Fixed(8))?;
    let y = arena.push(ColumnType::Fixed(8))?;
    let first = arena.tuple_children.len() as u16;
    arena.tuple_children.extend_from_slice(&[x, y]);
    let mut t = arena.push(ColumnType::Tuple { first, len: 2 })?;
    for _ in 0..levels {
        t = arena.push(ColumnType::Array(t))?;
    }
    Ok(t)
}

fn parse_uint(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn fixed_width(name: &[u8]) -> Option<u32> {
    Some(match name {
        b"UInt8" | b"Int8" | b"Bool" | b"Enum8" | b"Nothing" => 1,
        b"UInt16" | b"Int16" | b"Date" | b"Enum16" | b"BFloat16" => 2,
        b"UInt32" | b"Int32" | b"Float32" | b"DateTime" | b"Date32" | b"IPv4" | b"Decimal32"
        | b"Time" => 4,
        b"UInt64" | b"Int64" | b"Float64" | b"DateTime64" | b"Decimal64" | b"Time64" => 8,
        b"UInt128" | b"Int128" | b"UUID" | b"IPv6" | b"Decimal128" => 16,
        b"UInt256" | b"Int256" | b"Decimal256" => 32,
        _ if name.starts_with(b"Interval") && name.len() > 8 => 8,
        _ => return None,
    })
}

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// The bytes are not a block.
    Malformed(&'static str),
    /// The block is well-formed so far, but a column cannot be walked.
    Unwalkable(&'static str),
}

/// The result of one walking step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkStep {
    /// `n` bytes walked, the block goes on; `n` may exceed the buffer (skip them).
    Progress(u64),
    /// The block ended after `n` bytes of this buffer.
    Done(u64),
    /// Nothing could be walked: call again with more bytes.
    NeedMore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    /// Skip this many bytes.
    Skip(u64),
    /// Walk this many `String` values.
    Strings(u64),
    /// Walk a column of `node` type with `rows` values.
    Column { node: u16, rows: u64 },
    /// Read `left` more array offsets; then walk `child` with the last offset's rows.
    Offsets { left: u64, last: u64, child: u16 },
    /// A LowCardinality granule header: index type, optional dictionary, then indexes.
    LowCardinalityGranule { dictionary: u16, rows_left: u64 },
    /// The `u64` index count and the indexes of a LowCardinality granule.
    LowCardinalityIndexes {
        dictionary: u16,
        rows_left: u64,
        width: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// BlockInfo, column and row counts.
    Header,
    /// Name and type of the next column.
    ColumnHeader,
    /// Walking the current column's tasks.
    ColumnData,
}

/// Resumable walker over one uncompressed block.
#[derive(Debug)]
pub(crate) struct BlockWalker {
    phase: Phase,
    /// Columns have a `has_custom_serialization` byte (revision >= 54454).
    custom_serialization_flag: bool,
    pub n_columns: u64,
    pub n_rows: u64,
    /// Rows of a header read since the caller last took them ([`Self::take_new_rows`]).
    new_rows: Option<u64>,
    columns_left: u64,
    /// Parsed types of recent columns, kept across blocks: a result's blocks repeat the
    /// same columns, so each type name is parsed once per connection, not once per block.
    arena: TypeArena,
    type_cache: TypeCache,
    tasks: Vec<Task>,
}

/// Per column position: the type name last seen there, its parsed root and prefix length.
#[derive(Debug, Default)]
struct TypeCache {
    names: Vec<u8>,
    columns: Vec<Option<CachedType>>,
}

#[derive(Clone, Copy, Debug)]
struct CachedType {
    name_start: usize,
    name_end: usize,
    root: u16,
    /// Bulk prefix bytes; `None` when the type cannot be walked.
    prefix: Option<u64>,
}

/// Past these sizes the cache and the arena start over.
const MAX_CACHED_NODES: usize = 4096;
const MAX_CACHED_NAME_BYTES: usize = 64 * 1024;
/// Columns past this position are parsed every time.
const MAX_CACHED_COLUMNS: usize = 1024;

impl Default for BlockWalker {
    fn default() -> Self {
        BlockWalker {
            phase: Phase::Header,
            custom_serialization_flag: false,
            n_columns: 0,
            n_rows: 0,
            new_rows: None,
            columns_left: 0,
            arena: TypeArena::default(),
            type_cache: TypeCache::default(),
            tasks: Vec::new(),
        }
    }
}

fn malformed(e: WireError) -> Option<WalkError> {
    match e {
        WireError::Short => None,
        WireError::Bad(what) => Some(WalkError::Malformed(what)),
    }
}

impl BlockWalker {
    /// Starts a new block (the packet's name string already consumed).
    pub fn start(&mut self, custom_serialization_flag: bool) {
        self.phase = Phase::Header;
        self.custom_serialization_flag = custom_serialization_flag;
        self.n_columns = 0;
        self.n_rows = 0;
        self.new_rows = None;
        self.columns_left = 0;
        self.tasks.clear();
    }

    /// The block's row count, once, as soon as its header has been read.
    pub fn take_new_rows(&mut self) -> Option<u64> {
        self.new_rows.take()
    }

    /// Walks as far as `buf` allows.
    pub fn step(&mut self, buf: &[u8]) -> Result<WalkStep, WalkError> {
        let mut pos = 0usize;
        loop {
            match self.phase {
                Phase::Header => {
                    let mut c = Cursor::new(&buf[pos..]);
                    match read_block_header(&mut c) {
                        Ok((cols, rows)) => {
                            pos += c.pos;
                            self.n_columns = cols;
                            self.n_rows = rows;
                            self.new_rows = Some(rows);
                            self.columns_left = cols;
                            self.phase = Phase::ColumnHeader;
                        }
                        Err(e) => return self.stop(pos, e),
                    }
                }
                Phase::ColumnHeader => {
                    if self.columns_left == 0 {
                        return Ok(WalkStep::Done(pos as u64));
                    }
                    let mut c = Cursor::new(&buf[pos..]);
                    match self.read_column_header(&mut c) {
                        Ok(()) => {
                            pos += c.pos;
                            self.columns_left -= 1;
                            self.phase = Phase::ColumnData;
                        }
                        Err(e) => return self.stop_column(pos, e),
                    }
                }
                Phase::ColumnData => {
                    let Some(task) = self.tasks.pop() else {
                        self.phase = Phase::ColumnHeader;
                        continue;
                    };
                    match self.run_task(task, buf, &mut pos)? {
                        None => {}
                        Some(beyond) if beyond > 0 => {
                            return Ok(WalkStep::Progress(pos as u64 + beyond));
                        }
                        Some(_) => {
                            // Blocked on a short read: report what was walked.
                            return Ok(if pos == 0 {
                                WalkStep::NeedMore
                            } else {
                                WalkStep::Progress(pos as u64)
                            });
                        }
                    }
                }
            }
        }
    }

    fn stop(&self, pos: usize, e: WireError) -> Result<WalkStep, WalkError> {
        match malformed(e) {
            Some(err) => Err(err),
            None if pos == 0 => Ok(WalkStep::NeedMore),
            None => Ok(WalkStep::Progress(pos as u64)),
        }
    }

    fn stop_column(&self, pos: usize, e: ColumnHeaderError) -> Result<WalkStep, WalkError> {
        match e {
            ColumnHeaderError::Wire(w) => self.stop(pos, w),
            ColumnHeaderError::Walk(w) => Err(w),
        }
    }

    fn read_column_header(&mut self, c: &mut Cursor<'_>) -> Result<(), ColumnHeaderError> {
        let _name = c.string(MAX_NAME)?;
        let type_name = c.string(MAX_NAME)?;
        if self.custom_serialization_flag {
            match c.u8()? {
                0 => {}
                1 => {
                    return Err(ColumnHeaderError::Walk(WalkError::Unwalkable(
                        "custom (sparse/replicated) serialization",
                    )))
                }
                _ => {
                    return Err(ColumnHeaderError::Walk(WalkError::Malformed(
                        "bad custom serialization flag",
                    )))
                }
            }
        }
        self.tasks.clear();
        let cached = self.cached_type(type_name)?;
        if self.n_rows > 0 {
            let root = cached.root;
            let prefix = cached
                .prefix
                .ok_or(ColumnHeaderError::Walk(WalkError::Unwalkable(
                    "column type cannot be walked",
                )))?;
            self.tasks.push(Task::Column {
                node: root,
                rows: self.n_rows,
            });
            if prefix > 0 {
                self.tasks.push(Task::Skip(prefix));
            }
        }
        Ok(())
    }

    /// The parsed type of the current column, from the cache when the same position had the
    /// same type name in an earlier block.
    fn cached_type(&mut self, type_name: &[u8]) -> Result<CachedType, ColumnHeaderError> {
        // `columns_left` still counts the current column.
        let index = (self.n_columns - self.columns_left) as usize;
        let cache = &mut self.type_cache;
        if let Some(Some(t)) = cache.columns.get(index) {
            if &cache.names[t.name_start..t.name_end] == type_name {
                return Ok(*t);
            }
        }
        if self.arena.nodes.len() > MAX_CACHED_NODES || cache.names.len() > MAX_CACHED_NAME_BYTES {
            self.arena.clear();
            cache.names.clear();
            cache.columns.clear();
        }
        let root = self
            .arena
            .parse(type_name)
            .map_err(|_| ColumnHeaderError::Walk(WalkError::Malformed("bad column type name")))?;
        let name_start = cache.names.len();
        cache.names.extend_from_slice(type_name);
        let t = CachedType {
            name_start,
            name_end: cache.names.len(),
            root,
            prefix: self.arena.prefix_len(root).ok(),
        };
        if index < MAX_CACHED_COLUMNS {
            if cache.columns.len() <= index {
                cache.columns.resize(index + 1, None);
            }
            cache.columns[index] = Some(t);
        }
        Ok(t)
    }

    /// Runs one task from `buf[*pos..]`. `Ok(None)`: done, go on. `Ok(Some(k))`: stop here;
    /// `k > 0` bytes beyond the buffer are to be skipped, `k == 0` means more bytes are needed
    /// (the task, or its rest, is back on the stack).
    fn run_task(
        &mut self,
        task: Task,
        buf: &[u8],
        pos: &mut usize,
    ) -> Result<Option<u64>, WalkError> {
        let avail = (buf.len() - *pos) as u64;
        match task {
            Task::Skip(n) => {
                if n <= avail {
                    *pos += n as usize;
                    Ok(None)
                } else {
                    *pos = buf.len();
                    Ok(Some(n - avail))
                }
            }
            Task::Strings(mut n) => {
                // Fast path: one-byte lengths (values under 128 bytes) wholly in the buffer.
                let mut p = *pos;
                while n > 0 {
                    match buf.get(p) {
                        Some(&len) if len < 0x80 && p + 1 + (len as usize) <= buf.len() => {
                            p += 1 + len as usize;
                            n -= 1;
                        }
                        _ => break,
                    }
                }
                *pos = p;
                let mut c = Cursor::new(&buf[*pos..]);
                while n > 0 {
                    let start = c.pos;
                    match c.skip_string_partial(1 << 30) {
                        Ok(0) => n -= 1,
                        Ok(beyond) => {
                            n -= 1;
                            if n > 0 {
                                self.tasks.push(Task::Strings(n));
                            }
                            *pos += c.pos;
                            return Ok(Some(beyond));
                        }
                        Err(WireError::Short) => {
                            self.tasks.push(Task::Strings(n));
                            *pos += start;
                            return Ok(Some(0));
                        }
                        Err(WireError::Bad(what)) => return Err(WalkError::Malformed(what)),
                    }
                }
                *pos += c.pos;
                Ok(None)
            }
            Task::Column { node, rows } => {
                match self.arena.get(node) {
                    ColumnType::Fixed(w) => {
                        let n = rows
                            .checked_mul(u64::from(w))
                            .ok_or(WalkError::Malformed("column size overflows"))?;
                        self.tasks.push(Task::Skip(n));
                    }
                    ColumnType::String => self.tasks.push(Task::Strings(rows)),
                    ColumnType::Nullable(c) => {
                        self.tasks.push(Task::Column { node: c, rows });
                        self.tasks.push(Task::Skip(rows));
                    }
                    ColumnType::Array(c) => {
                        if rows > 0 {
                            self.tasks.push(Task::Offsets {
                                left: rows,
                                last: 0,
                                child: c,
                            });
                        }
                    }
                    ColumnType::Tuple { first, len } => {
                        for k in (first..first + len).rev() {
                            let child = self.arena.tuple_children[k as usize];
                            self.tasks.push(Task::Column { node: child, rows });
                        }
                    }
                    ColumnType::LowCardinality(d) => {
                        if rows > 0 {
                            self.tasks.push(Task::LowCardinalityGranule {
                                dictionary: d,
                                rows_left: rows,
                            });
                        }
                    }
                    ColumnType::Unwalkable => {
                        return Err(WalkError::Unwalkable("column type cannot be walked"))
                    }
                }
                Ok(None)
            }
            Task::Offsets { left, last, child } => {
                let whole = (avail / 8).min(left);
                let mut last = last;
                if whole > 0 {
                    let at = *pos + (whole as usize - 1) * 8;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&buf[at..at + 8]);
                    let v = u64::from_le_bytes(a);
                    if v < last || v > MAX_ROWS {
                        return Err(WalkError::Malformed("array offsets out of order"));
                    }
                    last = v;
                    *pos += whole as usize * 8;
                }
                let left = left - whole;
                if left == 0 {
                    if last > 0 {
                        self.tasks.push(Task::Column {
                            node: child,
                            rows: last,
                        });
                    }
                    Ok(None)
                } else {
                    self.tasks.push(Task::Offsets { left, last, child });
                    Ok(Some(0))
                }
            }
            Task::LowCardinalityGranule {
                dictionary,
                rows_left,
            } => {
                let mut c = Cursor::new(&buf[*pos..]);
                let header = (|| {
                    let flags = c.u64_le()?;
                    let additional = if flags & (1 << 9) != 0 {
                        Some(c.u64_le()?)
                    } else {
                        None
                    };
                    Ok((flags, additional))
                })();
                let (flags, additional) = match header {
                    Ok(h) => h,
                    Err(WireError::Short) => {
                        self.tasks.push(task);
                        return Ok(Some(0));
                    }
                    Err(WireError::Bad(w)) => return Err(WalkError::Malformed(w)),
                };
                let width = match flags & 0xff {
                    0 => 1,
                    1 => 2,
                    2 => 4,
                    3 => 8,
                    _ => return Err(WalkError::Malformed("bad LowCardinality index type")),
                };
                if flags & (1 << 8) != 0 {
                    return Err(WalkError::Unwalkable("LowCardinality global dictionary"));
                }
                if flags >> 11 != 0 {
                    return Err(WalkError::Malformed("bad LowCardinality flags"));
                }
                *pos += c.pos;
                self.tasks.push(Task::LowCardinalityIndexes {
                    dictionary,
                    rows_left,
                    width,
                });
                if let Some(keys) = additional {
                    if keys > MAX_ROWS {
                        return Err(WalkError::Malformed("LowCardinality dictionary too large"));
                    }
                    if keys > 0 {
                        self.tasks.push(Task::Column {
                            node: dictionary,
                            rows: keys,
                        });
                    }
                }
                Ok(None)
            }
            Task::LowCardinalityIndexes {
                dictionary,
                rows_left,
                width,
            } => {
                if avail < 8 {
                    self.tasks.push(task);
                    return Ok(Some(0));
                }
                let mut a = [0u8; 8];
                a.copy_from_slice(&buf[*pos..*pos + 8]);
                let n = u64::from_le_bytes(a);
                if n == 0 || n > rows_left {
                    return Err(WalkError::Malformed("bad LowCardinality index count"));
                }
                *pos += 8;
                if n < rows_left {
                    self.tasks.push(Task::LowCardinalityGranule {
                        dictionary,
                        rows_left: rows_left - n,
                    });
                }
                self.tasks.push(Task::Skip(n * u64::from(width)));
                Ok(None)
            }
        }
    }
}

enum ColumnHeaderError {
    Wire(WireError),
    Walk(WalkError),
}

impl From<WireError> for ColumnHeaderError {
    fn from(e: WireError) -> Self {
        ColumnHeaderError::Wire(e)
    }
}

/// BlockInfo fields, then the column and row counts.
pub(crate) fn read_block_header(c: &mut Cursor<'_>) -> Result<(u64, u64), WireError> {
    loop {
        match c.varuint()? {
            0 => break,
            1 => {
                if c.u8()? > 1 {
                    return Err(WireError::Bad("bad is_overflows"));
                }
            }
            2 => {
                c.i32_le()?;
            }
            3 => {
                // Out-of-order buckets (>= 54480): VarUInt count + Int32 each.
                let n = c.varuint_max(1 << 20, "too many buckets")?;
                c.skip(n * 4)?;
            }
            _ => return Err(WireError::Bad("unknown BlockInfo field")),
        }
    }
    let cols = c.varuint_max(MAX_COLUMNS, "too many columns")?;
    let rows = c.varuint_max(MAX_ROWS, "too many rows")?;
    Ok((cols, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(name: &str) -> Result<Vec<ColumnType>, ()> {
        let mut a = TypeArena::default();
        a.parse(name.as_bytes())?;
        Ok(a.nodes)
    }

    #[test]
    fn type_names_parse_into_walkable_shapes() {
        use ColumnType::*;
        assert_eq!(shape("UInt64"), Ok(vec![Fixed(8)]));
        assert_eq!(shape("DateTime('Europe/Moscow')"), Ok(vec![Fixed(4)]));
        assert_eq!(shape("DateTime64(3, 'UTC')"), Ok(vec![Fixed(8)]));
        assert_eq!(shape("Enum8('a,)' = 1, 'b' = 2)"), Ok(vec![Fixed(1)]));
        assert_eq!(shape("Decimal(9, 2)"), Ok(vec![Fixed(4)]));
        assert_eq!(shape("Decimal(38, 2)"), Ok(vec![Fixed(16)]));
        assert_eq!(shape("FixedString(3)"), Ok(vec![Fixed(3)]));
        assert_eq!(
            shape("Array(Nullable(String))"),
            Ok(vec![String, Nullable(0), Array(1)])
        );
        assert_eq!(
            shape("LowCardinality(Nullable(String))"),
            Ok(vec![String, Nullable(0), LowCardinality(0)])
        );
        assert_eq!(
            shape("Tuple(a UInt8, `b c` String)"),
            Ok(vec![Fixed(1), String, Tuple { first: 0, len: 2 }])
        );
        assert_eq!(
            shape("Map(String, UInt64)"),
            Ok(vec![String, Fixed(8), Tuple { first: 0, len: 2 }, Array(2)])
        );
        assert_eq!(
            shape("SimpleAggregateFunction(anyLast, Nullable(UInt8))"),
            Ok(vec![Fixed(1), Nullable(0)])
        );
        assert_eq!(
            shape("AggregateFunction(uniq, UInt64)"),
            Ok(vec![Unwalkable])
        );
        assert!(shape("Array(UInt8").is_err());
        assert!(shape("UInt8 garbage(").is_err());
        assert!(shape("").is_err());
    }

    fn walk_all(bytes: &[u8], custom: bool) -> Result<(u64, u64), WalkError> {
        let mut w = BlockWalker::default();
        w.start(custom);
        let mut pos = 0usize;
        loop {
            match w.step(&bytes[pos.min(bytes.len())..])? {
                WalkStep::Done(n) => return Ok((pos as u64 + n, w.n_rows)),
                WalkStep::Progress(n) => pos += n as usize,
                WalkStep::NeedMore => return Err(WalkError::Malformed("short")),
            }
        }
    }

    #[test]
    fn ch_go_golden_block_int8_uint64() {
        // proto/_golden/block_int8_uint64.raw (R >= 54454: custom serialization bytes).
        let mut b = vec![0x01, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x02, 0x05];
        b.extend_from_slice(b"\x05count\x04Int8\x00\x01\x02\x03\x04\x05");
        b.extend_from_slice(b"\x05users\x06UInt64\x00");
        b.extend_from_slice(&[7u8; 40]);
        assert_eq!(walk_all(&b, true), Ok((b.len() as u64, 5)));
        b.push(0x05);
        assert_eq!(walk_all(&b, true), Ok((b.len() as u64 - 1, 5)));
    }

    #[test]
    fn composite_columns_walk_to_their_end() {
        // Array(String) with rows [["a"], [], ["bc", "d"]], LowCardinality(String) x3.
        let mut b = vec![0x01, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x02, 0x03];
        b.extend_from_slice(b"\x01a\x0dArray(String)");
        for off in [1u64, 1, 3] {
            b.extend_from_slice(&off.to_le_bytes());
        }
        b.extend_from_slice(b"\x01a\x02bc\x01d");
        b.extend_from_slice(b"\x02lc\x16LowCardinality(String)");
        b.extend_from_slice(&1u64.to_le_bytes()); // key version prefix
        b.extend_from_slice(&((1u64 << 9) | (1 << 10)).to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(b"\x00\x01x");
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&[0, 1, 1]);
        assert_eq!(walk_all(&b, false), Ok((b.len() as u64, 3)));
        // Every split point gives the same end.
        for cut in 1..b.len() {
            let mut w = BlockWalker::default();
            w.start(false);
            let (mut pos, mut arrived) = (0usize, cut);
            let end = loop {
                match w.step(&b[pos.min(arrived)..arrived]).unwrap() {
                    WalkStep::Done(n) => break pos + n as usize,
                    WalkStep::Progress(n) => pos += n as usize,
                    WalkStep::NeedMore => {
                        assert!(arrived < b.len(), "cut {cut}");
                        arrived = b.len();
                    }
                }
                if pos >= arrived {
                    arrived = b.len();
                }
            };
            assert_eq!(end, b.len(), "cut {cut}");
        }
    }

    #[test]
    fn unwalkable_and_malformed_blocks_are_told_apart() {
        let mut b = vec![0x01, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 0x01];
        b.extend_from_slice(b"\x01a\x1fAggregateFunction(uniq, UInt64)");
        assert!(matches!(walk_all(&b, false), Err(WalkError::Unwalkable(_))));
        let bad = [0x07, 0x00];
        assert!(matches!(
            walk_all(&bad, false),
            Err(WalkError::Malformed(_))
        ));
    }
}
