"""Parsing Vivado's report_utilization, report_timing_summary and report_power text files."""

from hwgen.estimate.vivado_reports import (
    parse_build_dir,
    parse_power,
    parse_timing_summary,
    parse_utilization,
)

UTILIZATION = """\
Copyright 1986-2022 Xilinx, Inc. All Rights Reserved. Copyright 2022-2024 Advanced Micro Devices, Inc. All Rights Reserved.
---------------------------------------------------------------------------------------------------------------------------------------------
| Tool Version : Vivado v.2024.1 (lin64) Build 5076996 Wed May 22 18:36:09 MDT 2024
| Date         : Mon Nov  3 10:00:00 2025
| Host         : build running 64-bit Ubuntu 22.04.4 LTS
| Command      : report_utilization -file reports/utilization.rpt
| Design       : hwgen_board_top
| Device       : xc7s15ftgb196-2
| Speed File   : -2
| Design State : Routed
---------------------------------------------------------------------------------------------------------------------------------------------

Utilization Design Information

Table of Contents
-----------------
1. Slice Logic
1.1 Summary of Registers by Type
2. Slice Logic Distribution
3. Memory
4. DSP

1. Slice Logic
--------------

+-------------------------+------+-------+------------+-----------+-------+
|        Site Type        | Used | Fixed | Prohibited | Available | Util% |
+-------------------------+------+-------+------------+-----------+-------+
| Slice LUTs              | 5123 |     0 |          0 |      8000 | 64.04 |
|   LUT as Logic          | 4931 |     0 |          0 |      8000 | 61.64 |
|   LUT as Memory         |  192 |     0 |          0 |      2400 |  8.00 |
|     LUT as Distributed RAM|  192 |     0 |            |           |       |
| Slice Registers         | 6012 |     0 |          0 |     16000 | 37.58 |
|   Register as Flip Flop | 6012 |     0 |          0 |     16000 | 37.58 |
|   Register as Latch     |    0 |     0 |          0 |     16000 |  0.00 |
| F7 Muxes                |   64 |     0 |          0 |      4000 |  1.60 |
| F8 Muxes                |    0 |     0 |          0 |      2000 |  0.00 |
+-------------------------+------+-------+------------+-----------+-------+

3. Memory
---------

+-------------------+------+-------+------------+-----------+-------+
|     Site Type     | Used | Fixed | Prohibited | Available | Util% |
+-------------------+------+-------+------------+-----------+-------+
| Block RAM Tile    |  7.5 |     0 |          0 |        10 | 75.00 |
|   RAMB36/FIFO*    |    7 |     0 |          0 |        10 | 70.00 |
|     RAMB36E1 only |    7 |       |            |           |       |
|   RAMB18          |    1 |     0 |          0 |        20 |  5.00 |
|     RAMB18E1 only |    1 |       |            |           |       |
+-------------------+------+-------+------------+-----------+-------+

4. DSP
------

+----------------+------+-------+------------+-----------+-------+
|    Site Type   | Used | Fixed | Prohibited | Available | Util% |
+----------------+------+-------+------------+-----------+-------+
| DSPs           |   20 |     0 |          0 |        20 | 100.00 |
|   DSP48E1 only |   20 |       |            |           |       |
+----------------+------+-------+------------+-----------+-------+
"""

# Vivado before 2019 had no "Prohibited" column.
UTILIZATION_OLD = """\
| Device       : 7s15ftgb196
+----------------------------+------+-------+-----------+-------+
|          Site Type         | Used | Fixed | Available | Util% |
+----------------------------+------+-------+-----------+-------+
| Slice LUTs*                |  812 |     0 |      8000 | 10.15 |
| Slice Registers            |  990 |     0 |     16000 |  6.19 |
| Block RAM Tile             |    2 |     0 |        10 | 20.00 |
| DSPs                       |    4 |     0 |        20 | 20.00 |
+----------------------------+------+-------+-----------+-------+
"""

TIMING_MET = """\
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints     WPWS(ns)     TPWS(ns)  TPWS Failing Endpoints  TPWS Total Endpoints  
    -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------     --------     --------  ----------------------  --------------------  
      1.234        0.000                      0                14210        0.041        0.000                      0                14210        4.020        0.000                       0                  6517  


All user specified timing constraints are met.
"""

TIMING_FAILED = """\
    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints     WPWS(ns)     TPWS(ns)  TPWS Failing Endpoints  TPWS Total Endpoints  
    -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------     --------     --------  ----------------------  --------------------  
     -0.872     -153.402                    311                14210        0.035        0.000                      0                14210        4.020        0.000                       0                  6517  


Timing constraints are not met.
"""

POWER = """\
Copyright 1986-2022 Xilinx, Inc. All Rights Reserved.
----------------------------------------------------------------------------------------------------
| Tool Version     : Vivado v.2022.2 (lin64) Build 3671981 Fri Oct 14 04:59:54 MDT 2022
| Command          : report_power -file reports/power.rpt
| Design           : hwgen_board_top
| Device           : xc7s15ftgb196-2
| Design State     : routed
| Grade            : commercial
| Process          : typical
| Characterization : Production
----------------------------------------------------------------------------------------------------

Power Report

1. Summary
----------

+--------------------------+--------------+
| Total On-Chip Power (W)  | 0.083        |
| Design Power Budget (W)  | Unspecified* |
| Power Budget Margin (W)  | NA           |
| Dynamic (W)              | 0.051        |
| Device Static (W)        | 0.032        |
| Effective TJA (C/W)      | 4.9          |
| Max Ambient (C)          | 84.6         |
| Junction Temperature (C) | 25.4         |
| Confidence Level         | Low          |
| Setting File             | ---          |
| Simulation Activity File | ---          |
| Design Nets Matched      | NA           |
+--------------------------+--------------+
"""


def test_utilization():
    u = parse_utilization(UTILIZATION)
    assert (u["lut"], u["lut_available"]) == (5123, 8000)
    assert (u["lut_logic"], u["lut_memory"]) == (4931, 192)
    assert (u["ff"], u["ff_available"]) == (6012, 16000)
    assert (u["dsp"], u["dsp_available"]) == (20, 20)
    assert (u["bram36"], u["bram36_available"]) == (7.5, 10)
    assert u["device"] == "xc7s15ftgb196-2"


def test_utilization_without_prohibited_column():
    u = parse_utilization(UTILIZATION_OLD)
    assert (u["lut"], u["lut_available"], u["ff"], u["bram36"], u["dsp"]) == (812, 8000, 990, 2, 4)
    assert u["lut_logic"] is None  # not in the report: None, not a guess


def test_timing_met_and_failed():
    t = parse_timing_summary(TIMING_MET)
    assert (t["wns_ns"], t["tns_ns"], t["whs_ns"], t["met"]) == (1.234, 0.0, 0.041, True)
    f = parse_timing_summary(TIMING_FAILED)
    assert f["met"] is False
    assert (f["wns_ns"], f["tns_ns"], f["tns_failing_endpoints"]) == (-0.872, -153.402, 311)
    assert parse_timing_summary("no summary")["met"] is None


def test_power():
    p = parse_power(POWER)
    assert p == {"total_w": 0.083, "dynamic_w": 0.051, "static_w": 0.032, "junction_c": 25.4, "confidence": "Low"}
    assert parse_power("")["total_w"] is None


def test_build_dir(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "utilization.rpt").write_text(UTILIZATION)
    (reports / "power.rpt").write_text(POWER)
    r = parse_build_dir(tmp_path)
    assert r["utilization"]["dsp"] == 20 and r["power"]["total_w"] == 0.083
    assert r["timing"] is None
