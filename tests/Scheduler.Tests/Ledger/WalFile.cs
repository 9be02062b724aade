using System.Buffers.Binary;
using Potluck.Scheduler.Credits;

namespace Potluck.Scheduler.Tests.Ledger;

/// <summary>A ledger's WAL file read as SQLite writes it (tests that count what a write costs in pages and commits).</summary>
internal static class WalFile
{
    /// <summary>The ledger's WAL as written so far: its frames, and how many of them end a commit (no checkpoint may run between reads).</summary>
    public static (long Frames, long Commits) Read(CreditLedger ledger)
    {
        var bytes = File.ReadAllBytes(ledger.Path + "-wal");
        if (bytes.Length < 32)
        {
            return (0, 0);
        }
        var pageSize = (int)BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(8));
        var salt = bytes.AsSpan(16, 8).ToArray();
        long frames = 0, commits = 0;
        for (var at = 32; at + 24 + pageSize <= bytes.Length; at += 24 + pageSize)
        {
            if (!bytes.AsSpan(at + 8, 8).SequenceEqual(salt))
            {
                break; // a frame of an earlier generation of the WAL: not written since it was last restarted
            }
            frames++;
            if (BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(at + 4)) != 0)
            {
                commits++; // a commit frame holds the database's size in pages after the commit
            }
        }
        return (frames, commits);
    }
}
