namespace Potluck.Protocol.Runtime;

/// <summary>
/// Files and directories of the node's data directory, readable by their owner only: directories 0700, files 0600
/// (keys, ledgers with SQLite's <c>-wal</c> and <c>-shm</c> files, peer and reputation stores, modules, compiled
/// code). Files are created with their mode (never created open and narrowed afterwards), and a SQLite database is
/// created 0600 before SQLite opens it, since SQLite gives its WAL and SHM files the database file's mode. A directory
/// that already exists is narrowed to 0700 unless it is a shared sticky directory such as /tmp. No-ops on Windows.
/// </summary>
public static class OwnerOnly
{
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>Creates <paramref name="path"/> (and its parents) 0700, or narrows an existing one to 0700; returns the full path.</summary>
    public static string CreateDirectory(string path)
    {
        var full = Path.GetFullPath(path);
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(full);
            return full;
        }
        if (!Directory.Exists(full))
        {
            Directory.CreateDirectory(full, DirectoryMode);
            return full;
        }
        var mode = File.GetUnixFileMode(full);
        if ((mode & UnixFileMode.StickyBit) == 0 && (mode & ~DirectoryMode) != 0)
        {
            try
            {
                File.SetUnixFileMode(full, DirectoryMode);
            }
            catch (UnauthorizedAccessException)
            {
                // Someone else's directory: we may use it, not change it.
            }
        }
        return full;
    }

    /// <summary>Narrows an existing file to 0600 (nothing when it does not exist).</summary>
    public static void Restrict(string path)
    {
        if (OperatingSystem.IsWindows() || !File.Exists(path))
        {
            return;
        }
        if ((File.GetUnixFileMode(path) & ~FileMode) != 0)
        {
            File.SetUnixFileMode(path, FileMode);
        }
    }

    /// <summary>Options for a new file created 0600 (CreateNew: the mode applies only to a file we create).</summary>
    public static FileStreamOptions NewFile(FileAccess access = FileAccess.Write)
    {
        var options = new FileStreamOptions { Mode = System.IO.FileMode.CreateNew, Access = access, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = FileMode;
        }
        return options;
    }

    /// <summary>Writes <paramref name="bytes"/> to a new file created 0600 (fails if it exists: write to a fresh temporary name and move it).</summary>
    public static void WriteNewFile(string path, ReadOnlySpan<byte> bytes)
    {
        using var stream = new FileStream(path, NewFile());
        stream.Write(bytes);
    }

    /// <summary>
    /// Before SQLite opens <paramref name="databasePath"/>: creates it empty and 0600 if missing, else narrows it and its
    /// <c>-wal</c>, <c>-shm</c> and <c>-journal</c> files to 0600 (SQLite creates those with the database file's mode).
    /// </summary>
    public static void PrepareSqlite(string databasePath)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }
        if (!File.Exists(databasePath))
        {
            try
            {
                using var _ = new FileStream(databasePath, NewFile());
            }
            catch (IOException) when (File.Exists(databasePath))
            {
                // Created meanwhile by another opener: narrowed below.
            }
        }
        foreach (var suffix in (ReadOnlySpan<string>)["", "-wal", "-shm", "-journal"])
        {
            Restrict(databasePath + suffix);
        }
    }
}
